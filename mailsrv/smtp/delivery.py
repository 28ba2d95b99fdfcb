"""
Where accepted mail goes: the recipient policy (local users, aliases,
catch-all, postmaster, no open relay), delivery into the store, and the
outbound queue for authenticated users' mail to other domains.

Delivery is Twisted's seam: an L{IMessageDelivery} per transaction, whose
C{validateTo} returns a factory of L{IMessageSMTP} that receives the lines
and, at the end, stores the message.  An embedding application replaces
L{StoreDelivery} with its own L{IMessageDelivery} (see L{SessionDelivery}).
"""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Callable

from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP
from twisted.mail.smtp import Address, User
from zope.interface import implementer

from mailsrv.config import Settings
from mailsrv.logs import get_logger
from mailsrv.smtp.address import Mailbox, parse_mail_from
from mailsrv.smtp.server import Reply
from mailsrv.smtp.spool import MessageSpool
from mailsrv.store.interfaces import IMailStore, OverQuota, StoreError

log = get_logger(__name__)


class RecipientPolicy:
    """
    Which recipients this server accepts, and which local mailboxes their
    mail goes to (RFC 5321 3.6, 4.5.1).

    @param known_users: returns a L{Deferred} of the addresses that have an
        account (the passwd-file).
    """

    def __init__(self, settings: Settings, known_users: Callable[[], Deferred]):
        self._domains = settings.domains
        self._default_domain = settings.default_domain
        self.restrict_senders = settings.auth.restrict_senders
        self._known_users = known_users

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self._domains

    async def mailboxes(self, recipient: Mailbox) -> list[str]:
        """
        The local mailboxes for a recipient in a local domain.

        @raise Reply: 550 5.1.1 for an unknown user.
        """
        domain = (recipient.domain or self._default_domain).lower()
        local = recipient.local_part.lower()
        settings = self._domains[domain]
        address = f"{local}@{domain}"
        if local in settings.aliases:
            return [self._qualified(target, domain) for target in settings.aliases[local]]
        if address in await self._known_users():
            return [address]
        if local == "postmaster":
            # RFC 5321 4.5.1: always accepted; kept in a mailbox of its own
            # until an alias or a user takes it.
            return [address]
        if settings.catch_all:
            return [self._qualified(settings.catch_all, domain)]
        raise Reply(550, "5.1.1", "No such user here")

    def _qualified(self, target: str, domain: str) -> str:
        return target.lower() if "@" in target else f"{target.lower()}@{domain}"

    def senders_for(self, account_address: str) -> set[str]:
        """
        The addresses an authenticated user may send as: their own, and the
        aliases that deliver to them.
        """
        allowed = {account_address}
        for domain, settings in self._domains.items():
            for local, targets in settings.aliases.items():
                if account_address in (self._qualified(t, domain) for t in targets):
                    allowed.add(f"{local}@{domain}")
        return allowed


def twisted_address(mailbox: Mailbox | None) -> Address:
    """
    The L{Address} an L{IMessageDelivery} expects, built without Twisted's
    ASCII-only parser (UTF-8 addresses, RFC 6531, stay UTF-8 bytes).
    """
    address = Address.__new__(Address)
    if mailbox is None:
        address.local, address.domain = b"", b""
    else:
        address.local = mailbox.local_part.encode("utf-8")
        address.domain = mailbox.domain.encode("utf-8")
    address.addrstr = str(mailbox or "").encode("utf-8")
    return address


def twisted_user(recipient: Mailbox, helo, session, origin: Address) -> User:
    user = User.__new__(User)
    user.dest, user.helo, user.protocol, user.orig = (twisted_address(recipient), helo,
                                                       session, origin)
    user.mailbox = recipient
    return user


class SessionDelivery:
    """
    Connects an SMTP session to an L{IMessageDelivery} made for each
    transaction by C{make_delivery(session)}.
    """

    def __init__(self, make_delivery: Callable[[object], IMessageDelivery]):
        self._make_delivery = make_delivery

    def _helo(self, session):
        return (session.helo.encode("utf-8"), session.peer.encode("ascii", "replace"))

    def validate_sender(self, session, sender: Mailbox | None):
        delivery = self._make_delivery(session)
        origin = twisted_address(sender)
        d = maybeDeferred(delivery.validateFrom, self._helo(session), origin)
        return d.addCallback(lambda accepted: (delivery, accepted))

    def validate_recipient(self, session, transaction, recipient: Mailbox):
        delivery, origin = transaction.delivery
        user = twisted_user(recipient, self._helo(session), session, origin)
        return maybeDeferred(delivery.validateTo, user).addCallback(
            lambda make_message: (user, make_message))

    def start_message(self, session, transaction) -> list[IMessageSMTP]:
        delivery, origin = transaction.delivery
        users = [user for user, _ in transaction.accepted]
        messages = [make_message() for _, make_message in transaction.accepted]
        header = delivery.receivedHeader(self._helo(session), origin, users)
        if header:
            text = header.decode("utf-8") if isinstance(header, bytes) else header
            for line in text.replace("\r\n", "\n").split("\n"):
                for message in messages:
                    message.lineReceived(line.encode("utf-8"))
        return messages

    def finish_message(self, transaction) -> Deferred:
        """
        @return: a L{Deferred} of the queue ID once every message is stored.
        """
        delivery, _ = transaction.delivery
        fallback = getattr(delivery, "queue_id", None) or uuid.uuid4().hex[:16].upper()
        results = [maybeDeferred(m.eomReceived) for m in transaction.messages]
        return gatherResults(results, consumeErrors=True).addCallbacks(
            lambda ids: next((i for i in ids if isinstance(i, str)), fallback),
            _first_error)


def _first_error(failure):
    error = failure.value.subFailure if hasattr(failure.value, "subFailure") else failure
    error.raiseException()


@implementer(IMessageDelivery)
class StoreDelivery:
    """
    Local delivery into the store, for one transaction of one session:
    recipients checked against the policy, one copy per mailbox however
    many RCPTs name it.
    """

    def __init__(self, session, store: IMailStore, policy: RecipientPolicy, queue=None):
        self._session = session
        self._store = store
        self._policy = policy
        self._queue = queue
        self._mailboxes: list[str] = []
        self._remote: list[str] = []
        self._message: StoreMessage | None = None
        self.sender = ""
        self.queue_id = uuid.uuid4().hex[:16].upper()

    def receivedHeader(self, helo, origin, recipients):
        """
        The trace field of RFC 5321 4.4, with the protocol names of RFC 3848
        and RFC 6531 4.3 (ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP...).
        """
        session = self._session
        protocol = ("UTF8SMTP" if session.smtputf8 else "ESMTP") if session.esmtp else "SMTP"
        if session.tls_version:
            protocol += "S"
        if session.account is not None:
            protocol += "A"
        tls = f" ({session.tls_version} cipher {session.tls_cipher})" if session.tls_version \
            else ""
        recipient = f"\r\n\tfor <{recipients[0].mailbox}>" if len(recipients) == 1 else ""
        return (f"Received: from {session.helo} ([{session.peer}])\r\n"
                f"\tby {session.factory.hostname} (mailsrv) with {protocol} id "
                f"{self.queue_id}{tls}{recipient};\r\n"
                f"\t{email.utils.formatdate(localtime=False)}")

    def validateFrom(self, helo, origin):
        session = self._session
        if self._policy.restrict_senders and session.account is not None:
            sender = origin.addrstr.decode("utf-8").lower()
            if sender and sender not in self._policy.senders_for(session.account.address):
                raise Reply(553, "5.7.1",
                            f"Sender address not owned by user {session.account.address}")
        self.sender = origin.addrstr.decode("utf-8")
        return origin

    async def _validate_to(self, user):
        recipient: Mailbox = user.mailbox
        if not recipient.domain or self._policy.is_local(recipient.domain):
            mailboxes = await self._policy.mailboxes(recipient)
        elif self._session.account is None:
            raise Reply(554, "5.7.1", "Relay access denied")
        elif self._queue is None:
            raise Reply(550, "5.7.1", "This server does not send to other domains")
        else:
            if str(recipient) not in self._remote:
                self._remote.append(str(recipient))
            return self._make_message
        new = [m for m in mailboxes if m not in self._mailboxes]
        self._mailboxes.extend(new)
        return self._make_message

    def validateTo(self, user):
        return Deferred.fromCoroutine(self._validate_to(user))

    def _make_message(self):
        """
        One message object for the whole transaction: the first recipient's
        gets the lines, the others share its outcome.
        """
        if self._message is None:
            self._message = StoreMessage(self)
            return self._message
        return _SharedMessage(self._message)

    def deliver(self, spool: MessageSpool, sender: str) -> Deferred:
        return Deferred.fromCoroutine(self._deliver(spool, sender))

    async def _deliver(self, spool: MessageSpool, sender: str):
        """
        Store one copy per mailbox, each prefixed with its Return-Path
        (RFC 5321 4.4), and queue one for the remote recipients.  Any
        failure fails the whole message, temporarily unless every failure is
        permanent (such as over quota): the client retries or bounces it, so
        a recipient that succeeded may get it twice, and none loses it.
        """
        header = f"Return-Path: <{sender}>\r\n".encode()
        steps = [maybeDeferred(self._store.deliver, mailbox, spool.open_with_prefix(header))
                 for mailbox in self._mailboxes]
        if self._remote:
            steps.append(self._queue.enqueue(sender, self._remote, spool.open_with_prefix(b""),
                                             smtputf8=self._session.smtputf8,
                                             queue_id=self.queue_id))
        outcomes = await DeferredList(steps, consumeErrors=True)
        failures = [result for ok, result in outcomes if not ok]
        permanent = [f for f in failures if f.check(StoreError)]
        if permanent and len(permanent) == len(failures):
            permanent[0].raiseException()
        if failures:
            for failure in failures:
                if not failure.check(StoreError):
                    log.failure("Delivery of {id} failed", failure, id=self.queue_id)
            raise Reply(451, "4.3.0", "Could not store the message now, try again later")
        log.info("Delivered {id} from <{sender}> to {recipients} ({size} octets, peer "
                 "{peer}, tls {tls}, user {user})", id=self.queue_id, sender=sender,
                 recipients=",".join(self._mailboxes + self._remote), size=spool.size,
                 peer=self._session.peer, tls=self._session.tls_version or "none",
                 user=self._session.account.address if self._session.account else "-")
        return self.queue_id


@implementer(IMessageSMTP)
class StoreMessage:
    """
    The lines of a message, spooled (memory, then a temporary file), then
    delivered to every mailbox of the transaction.
    """

    def __init__(self, delivery: StoreDelivery):
        self._delivery = delivery
        self._spool = MessageSpool()

    def lineReceived(self, line: bytes):
        self._spool.write(line + b"\r\n")

    def write_data(self, block: bytes):
        """
        Whole CRLF-terminated lines at once: what the server uses instead of
        one L{lineReceived} per line when a message has it.
        """
        self._spool.write(block)

    def eomReceived(self):
        d = self._delivery.deliver(self._spool, self._delivery.sender)

        def translate(failure):
            if failure.check(OverQuota):
                raise Reply(552, "5.2.2", str(failure.value))
            if failure.check(StoreError):
                raise Reply(554, "5.3.0", str(failure.value))
            if failure.check(Reply):
                return failure
            log.failure("Delivery failed", failure)
            raise Reply(451, "4.3.0", "Could not store the message now, try again later")

        d.addErrback(translate)
        d.addBoth(self._spool.close_after)
        return d

    def connectionLost(self):
        self._spool.close()


@implementer(IMessageSMTP)
class _SharedMessage:
    def __init__(self, message: StoreMessage):
        self._message = message

    def lineReceived(self, line):
        pass

    def write_data(self, block):
        pass

    def eomReceived(self):
        return None

    def connectionLost(self):
        pass


async def deliver_locally(store: IMailStore, policy: RecipientPolicy, address: str,
                          message: bytes) -> None:
    """
    Store a message that the server itself sends (a bounce) for a local
    address, wherever its aliases lead.

    @raise LookupError: if the address has no mailbox here.
    """
    recipient, _ = parse_mail_from(f"<{address}>", smtputf8_allowed=True)
    try:
        mailboxes = await policy.mailboxes(recipient)
    except Reply as e:
        raise LookupError(e.text) from None
    for mailbox in mailboxes:
        await store.deliver(mailbox, message)
