"""
The POP3 protocol (RFC 1939) with CAPA and response codes (RFC 2449, RFC
3206), SASL PLAIN (RFC 5034), STLS (RFC 2595) and implicit TLS, over the
store's INBOX.

Our own protocol class, as twisted.mail's C{POP3} lacks STLS and SASL,
miscounts deleted messages, deletes the last message on C{DELE 0} and
dot-stuffs each 16 KiB chunk on its own (twisted-mail-notes.md 3).

Commands run one at a time in the order they arrive (PIPELINING, RFC 2449
6.6); each reply goes out in one write (TCP_NODELAY is on).  The maildrop
is the INBOX as it was at login; DELE only marks, and the marked messages
are removed at QUIT in one step, with the retrieved ones marked \\Seen
(RFC 1939 6).  A dropped connection changes nothing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin

from mailsrv import __version__
from mailsrv.config import Settings
from mailsrv.connections import ConnectionLimiter, CountedConnection
from mailsrv.cred.credentials import PeerUsernamePassword, plain_response
from mailsrv.cred.realm import IMailAccount
from mailsrv.dots import DotStuffer, LineLimit
from mailsrv.logs import get_logger
from mailsrv.store.interfaces import INBOX, TemporaryStoreError

log = get_logger(__name__)

#: Messages up to this size are read whole, in one trip to the store (a
#: trip per RETR is most of its cost); larger ones in CHUNK pieces.
WHOLE = 1024 * 1024
#: Bytes of a large message read from the store at a time.
CHUNK = 64 * 1024

_SEEN = "\\Seen"


class Refused(Exception):
    """
    A command failed: the text of its -ERR reply, with its response code.
    """

    def __init__(self, text: str, code: str | None = None):
        super().__init__(f"[{code}] {text}" if code else text)


@dataclass
class Maildrop:
    """
    The INBOX as it was at login (RFC 1939 4): message numbers count from
    1 in UID order and never change during the session.
    """

    uidvalidity: int
    uids: list[int]
    sizes: list[int]
    deleted: set[int] = field(default_factory=set)
    retrieved: set[int] = field(default_factory=set)

    def number(self, text: str) -> int:
        """
        The index of the message numbered C{text}; L{Refused} for one that
        does not exist or is marked deleted (so DELE 0 deletes nothing).
        """
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= len(self.uids):
            raise Refused("No such message")
        index = int(text) - 1
        if index in self.deleted:
            raise Refused("Message is deleted")
        return index

    def uidl(self, index: int) -> str:
        """
        The unique-id of a message: Dovecot's default (pop3_uidl_format
        %08Xu%08Xv), so that clients moving from Dovecot do not download
        everything again; stable for as long as its IMAP UID and
        UIDVALIDITY are.
        """
        return f"{self.uids[index]:08X}{self.uidvalidity:08X}"

    def present(self) -> list[int]:
        return [i for i in range(len(self.uids)) if i not in self.deleted]


class POP3Server(CountedConnection, Protocol, TimeoutMixin):
    """
    One POP3 connection.

    @ivar tls: whether the connection is encrypted.
    """

    def __init__(self):
        self._buffer = b""
        self._busy = False
        self._closing = False
        self._user: str | None = None
        self._auth_failures = 0
        self.account = None
        self.maildrop: Maildrop | None = None
        #: Contents read ahead by L{_read_ahead}, by message index.
        self._ahead: dict[int, bytes | None] = {}

    @property
    def limits(self):
        return self.factory.settings.limits

    # Connection

    def connectionMade(self):
        if not self.admit():
            self.transport.write(b"-ERR [SYS/TEMP] Too many connections, try again later\r\n")
            self.close()
            return
        self.setTimeout(self.limits.command_timeout)
        self.transport.write(b"+OK mailsrv POP3 ready\r\n")

    def connectionLost(self, reason):
        self.setTimeout(None)
        self._unlock()
        self.release(reason)

    def timeoutConnection(self):
        self.transport.write(b"-ERR Idle for too long, closing\r\n")
        self.close()

    def close(self):
        self._closing = True
        self._unlock()  # the session is over: another may open the maildrop now
        self.transport.loseConnection()

    def _unlock(self):
        if self.maildrop is not None:
            self.factory.maildrops.discard(self.account.address)
            self.maildrop = None

    # Input

    def dataReceived(self, data: bytes):
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()

    def _process(self):
        # A command waiting for a line of a SASL exchange takes the next one.
        while not self._closing and (not self._busy or self._line_waiter is not None):
            line = self._take_line()
            if line is None:
                return
            if self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                waiter.callback(line)
                continue
            self._busy = True
            Deferred.fromCoroutine(self._run(line)).addBoth(self._done)

    def _take_line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end == -1:
            if len(self._buffer) > self.limits.max_line_length:
                self._buffer = b""
                self.transport.write(b"-ERR Line too long\r\n")
                self.close()
            return None
        line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
        if len(line) > self.limits.max_line_length:
            self.transport.write(b"-ERR Line too long\r\n")
            self.close()
            return None
        return line.rstrip(b"\r")

    def _done(self, result):
        self._busy = False
        if not self._closing:
            self._process()

    def read_line(self) -> Deferred:
        """
        The client's next line, for a SASL exchange inside a command.
        """
        self._line_waiter = Deferred()
        return self._line_waiter

    # Output

    def reply(self, text: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\r\n")

    # Commands

    async def _run(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        name, _, rest = text.partition(" ")
        handler = getattr(self, f"do_{name.upper()}", None) if name.isalpha() else None
        try:
            if handler is None:
                raise Refused("Unknown command")
            await handler(rest)
        except Refused as e:
            self.reply(f"-ERR {e}")
        except TemporaryStoreError:
            self.reply("-ERR [SYS/TEMP] The mail store failed; try again later")
        except Exception:
            if self._closing:
                return
            log.failure("POP3 command failed for {peer}", peer=self.peer)
            self.reply("-ERR [SYS/TEMP] Internal error")

    def _plaintext_ok(self) -> bool:
        return self.tls or self.factory.settings.auth.allow_plaintext

    def _in(self, state: str) -> None:
        authorized = self.maildrop is not None
        if (state == "TRANSACTION") != authorized:
            raise Refused("Not now" if authorized else "Log in first")

    async def do_CAPA(self, rest):
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.maildrop is None and self._plaintext_ok():
            capabilities += ["USER", "SASL PLAIN"]
        if self.maildrop is None and not self.tls and self.factory.tls is not None:
            capabilities.append("STLS")
        capabilities.append(f"IMPLEMENTATION mailsrv-{__version__}")
        self.reply("+OK Capability list follows\r\n" + "\r\n".join(capabilities) + "\r\n.")

    async def do_NOOP(self, rest):
        self._in("TRANSACTION")
        self.reply("+OK")

    async def do_QUIT(self, rest):
        if self.maildrop is None:
            self.reply("+OK Bye")
            self.close()
            return
        maildrop = self.maildrop
        store = self.account.store
        gone = [maildrop.uids[i] for i in sorted(maildrop.deleted)]
        seen = [maildrop.uids[i] for i in sorted(maildrop.retrieved - maildrop.deleted)]
        try:
            # RFC 1939 6: the UPDATE state.
            if seen:
                await store.set_flags(INBOX, seen, [_SEEN], "add")
            if gone:
                await store.remove(INBOX, gone)
        except TemporaryStoreError:
            self.reply("-ERR [SYS/TEMP] Some deleted messages were not removed")
        else:
            self.reply(f"+OK Bye, {len(gone)} messages deleted")
        self.close()

    async def do_STLS(self, rest):
        if self.tls or self.factory.tls is None:
            raise Refused("TLS is already active" if self.tls else "STLS not offered")
        self._in("AUTHORIZATION")
        self.reply("+OK Begin TLS negotiation")
        # RFC 2595 4: what the client sent after STLS is not a command.
        self._buffer = b""
        self.transport.startTLS(self.factory.tls)
        self.tls = True
        self._user = None

    async def do_USER(self, rest):
        self._in("AUTHORIZATION")
        if not self._plaintext_ok():
            raise Refused("Log in after STLS", "AUTH")
        if not rest:
            raise Refused("USER needs a name")
        self._user = rest
        self.reply("+OK Send the password")

    async def do_PASS(self, rest):
        self._in("AUTHORIZATION")
        user, self._user = self._user, None
        if user is None:
            raise Refused("Send USER first")
        await self._login(user, rest)

    async def do_AUTH(self, rest):
        self._in("AUTHORIZATION")
        mechanism, _, initial = rest.partition(" ")
        if mechanism.upper() != "PLAIN":
            raise Refused(f"Unsupported mechanism {mechanism}")
        if not self._plaintext_ok():
            raise Refused("Authenticate after STLS", "AUTH")
        if not initial:
            self.reply("+ ")
            initial = (await self.read_line()).decode("ascii", "replace").strip()
            if initial == "*":
                raise Refused("Authentication cancelled")
        try:
            # RFC 5034 4: "=" is an empty initial response.
            decoded = b"" if initial == "=" else base64.b64decode(initial, validate=True)
        except ValueError:
            raise Refused("Invalid base64") from None
        try:
            authzid, user, password = plain_response(decoded)
        except ValueError as e:
            raise Refused(str(e)) from None
        if authzid and authzid.lower() != user.lower():
            raise Refused("Logging in as another user is not allowed", "AUTH")
        await self._login(user, password)

    async def _login(self, user: str, password: str) -> None:
        credentials = PeerUsernamePassword(user, password, self.peer)
        try:
            _, account, _ = await self.factory.portal.login(credentials, None, IMailAccount)
        except UnauthorizedLogin:
            self._auth_failures += 1
            if self._auth_failures >= self.limits.max_auth_failures:
                self.reply("-ERR [AUTH] Authentication failed; too many failures, closing")
                self.close()
                return
            raise Refused("Authentication failed", "AUTH") from None
        if account.address in self.factory.maildrops:
            # RFC 2449 8.1.1: the maildrop is locked by another session.
            raise Refused("Another POP3 session is using this maildrop", "IN-USE")
        self.factory.maildrops.add(account.address)
        try:
            snapshot = await account.store.snapshot(INBOX)
        except BaseException:
            self.factory.maildrops.discard(account.address)
            raise
        self.account = account
        self.maildrop = Maildrop(snapshot.uidvalidity, [m.uid for m in snapshot.messages],
                                 [m.size for m in snapshot.messages])
        self.setTimeout(self.limits.idle_timeout)
        log.info("POP3 login {user} from {peer}", user=account.address, peer=self.peer)
        self.reply(f"+OK {len(snapshot.messages)} messages")

    async def do_STAT(self, rest):
        self._in("TRANSACTION")
        present = self.maildrop.present()
        self.reply(f"+OK {len(present)} {sum(self.maildrop.sizes[i] for i in present)}")

    async def do_LIST(self, rest):
        self._listing(rest, lambda i: str(self.maildrop.sizes[i]))

    async def do_UIDL(self, rest):
        self._listing(rest, self.maildrop.uidl if self.maildrop else None)

    def _listing(self, rest: str, value) -> None:
        self._in("TRANSACTION")
        if rest:
            index = self.maildrop.number(rest)
            self.reply(f"+OK {index + 1} {value(index)}")
            return
        lines = [f"{i + 1} {value(i)}" for i in self.maildrop.present()]
        self.reply("\r\n".join(["+OK", *lines, "."]))

    async def do_DELE(self, rest):
        self._in("TRANSACTION")
        index = self.maildrop.number(rest)
        self.maildrop.deleted.add(index)
        self.reply(f"+OK Message {index + 1} deleted")

    async def do_RSET(self, rest):
        self._in("TRANSACTION")
        self.maildrop.deleted.clear()
        self.reply(f"+OK {len(self.maildrop.uids)} messages")

    async def do_RETR(self, rest):
        self._in("TRANSACTION")
        index = self.maildrop.number(rest)
        await self._send(index)
        self.maildrop.retrieved.add(index)

    async def do_TOP(self, rest):
        self._in("TRANSACTION")
        number, _, lines = rest.partition(" ")
        index = self.maildrop.number(number)
        if not lines.isascii() or not lines.isdigit():
            raise Refused("TOP needs a message number and a line count")
        await self._send(index, LineLimit(int(lines)))

    async def _read_ahead(self, index: int) -> bytes | None:
        """
        A small message's content, read together with those that follow it
        (up to WHOLE bytes in all): clients RETR one message after the
        other, and a trip to the store per message was most of the time of
        a RETR.  None if it is gone from the store.
        """
        ahead = self._ahead
        if index not in ahead:
            ahead.clear()
            maildrop = self.maildrop
            wanted, total = [], 0
            for following in range(index, len(maildrop.uids)):
                size = maildrop.sizes[following]
                if wanted and (total + size > WHOLE or following in maildrop.deleted):
                    break
                wanted.append(following)
                total += size
            contents = await self.account.store.read_messages(
                INBOX, [maildrop.uids[i] for i in wanted])
            ahead.update({i: contents.get(maildrop.uids[i]) for i in wanted})
        return ahead.pop(index)

    async def _send(self, index: int, limit: LineLimit | None = None) -> None:
        """
        The message as a dot-terminated block, its first line with the
        status line and the last with the terminator: one write for most
        messages.  A large message is read and written in chunks, never
        held whole, and a client that reads slowly slows the reading down.
        """
        store = self.account.store
        uid, size = self.maildrop.uids[index], self.maildrop.sizes[index]
        status = f"+OK {size} octets\r\n".encode()
        if size <= WHOLE:
            content = await self._read_ahead(index)
            if content is None:
                raise Refused("The message was removed by another session")
            stuffer = DotStuffer(limit, crlf=True)  # the store gives CRLF
            # The next command waits until the transport wants more: a
            # client that pipelines RETRs without reading must not make the
            # server hold its maildrop in memory.
            self.transport.registerProducer(self, True)
            try:
                self.transport.write(status + stuffer.stuff(content) + stuffer.end())
                await self.writable()
            finally:
                self.transport.unregisterProducer()
            return
        stuffer = DotStuffer(limit)
        try:
            message = await store.open_message(INBOX, uid)
        except KeyError:
            raise Refused("The message was removed by another session") from None
        self.transport.registerProducer(self, True)
        try:
            while True:
                chunk = await self.factory.run(message.read, CHUNK)
                data = status + stuffer.stuff(chunk)
                status = b""
                # A file read returns less than asked only at its end.
                if len(chunk) < CHUNK or stuffer.done:
                    self.transport.write(data + stuffer.end())
                    return
                self.transport.write(data)
                await self.writable()
        except BaseException:
            # Never end the block on a partial message.
            self.transport.abortConnection()
            raise
        finally:
            self.transport.unregisterProducer()
            message.close()


class POP3Factory(Factory):
    """
    The sessions of the POP3 listeners.

    @param run: runs blocking reads of message files in a thread.
    @param maildrops: the users with a POP3 session, shared by every POP3
        listener (RFC 1939 8: one session per maildrop).
    """

    protocol = POP3Server
    noisy = False

    def __init__(self, settings: Settings, tls, portal, limiter: ConnectionLimiter, run, *,
                 implicit_tls: bool = False, maildrops: set[str] | None = None):
        self.settings = settings
        self.tls = tls
        self.portal = portal
        self.limiter = limiter
        self.run = run
        self.implicit_tls = implicit_tls
        self.maildrops = maildrops if maildrops is not None else set()
