"""
The ESMTP server protocol (RFC 5321), for the MX, submission and
submissions listeners.

Our own protocol class on Twisted, because twisted.mail's ESMTP executes
commands pipelined before STARTTLS, runs the rest of an over-long DATA line
as commands, has no BDAT and parses ASCII addresses only
(../shared/twisted-mail-notes.md section 2).  Delivery still goes through
Twisted's L{IMessageDelivery} / L{IMessageSMTP} seam, so an embedding
application can plug its own in.

Input is split on CRLF only.  Commands are answered strictly in order, one
at a time, so pipelining (RFC 2920) works with asynchronous checks; replies
wait in a buffer and leave in one write when the input is used up.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.mail.smtp import SMTPBadRcpt, SMTPBadSender, SMTPServerError
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailsrv.config import LimitSettings, Settings
from mailsrv.connections import ConnectionLimiter, accept
from mailsrv.cred.credentials import PeerUsernamePassword
from mailsrv.cred.realm import IMailAccount
from mailsrv.logs import get_logger
from mailsrv.smtp.address import AddressError, Mailbox, parse_mail_from, parse_rcpt_to

log = get_logger(__name__)

#: Longest command line: RFC 4954 4 allows AUTH lines of 12288 octets.
MAX_COMMAND_LINE = 12288


@dataclass(frozen=True)
class Role:
    """
    What a listener is for: MX takes mail for local domains from anyone;
    submission and submissions take mail from authenticated users only.
    """

    name: str
    implicit_tls: bool
    offers_starttls: bool
    requires_auth: bool
    offers_auth: bool


ROLES = {
    "smtp": Role("smtp", implicit_tls=False, offers_starttls=True, requires_auth=False,
                 offers_auth=False),
    "submission": Role("submission", implicit_tls=False, offers_starttls=True,
                       requires_auth=True, offers_auth=True),
    "submissions": Role("submissions", implicit_tls=True, offers_starttls=False,
                        requires_auth=True, offers_auth=True),
}


class Reply(Exception):
    """
    Answer the current command with this reply (raised from handlers).
    """

    def __init__(self, code: int, enhanced: str, text: str):
        super().__init__(code, enhanced, text)
        self.code, self.enhanced, self.text = code, enhanced, text


@dataclass
class Transaction:
    """
    One mail transaction: MAIL, the accepted RCPTs, and the message being
    received.

    @ivar delivery: what the delivery seam returned for MAIL (see
        L{mailsrv.smtp.delivery.SessionDelivery}).
    @ivar accepted: what it returned for each accepted RCPT.
    @ivar problem: the reply that refuses the message once it is read.
    """

    sender: Mailbox | None
    delivery: object
    smtputf8: bool
    declared_size: int | None
    accepted: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    size: int = 0
    problem: Reply | None = None


class SMTPServer(Protocol, TimeoutMixin):
    """
    One SMTP session.

    @ivar factory: the L{SMTPFactory}, holding the role, the limits, the
        TLS context, the portal and the delivery.
    """

    def __init__(self):
        self._buffer = b""
        self._out: list[bytes] = []
        self._busy = False
        self._mode = "command"
        self._helo: str | None = None
        self._esmtp = False
        self._transaction: Transaction | None = None
        self._account = None
        self._errors = 0
        self._auth_failures = 0
        self._auth_step = None
        self._bdat_remaining = 0
        self._bdat_last = False
        self._discarding_line = False
        self._line_too_long = False
        self._bdat_pending = b""
        self._bdat_size = 0
        self._counted = False
        self._closing = False
        self._tls = False
        self.peer = "unknown"

    # -- what the delivery side may ask of the session ------------------------

    @property
    def helo(self) -> str:
        return self._helo or ""

    @property
    def esmtp(self) -> bool:
        return self._esmtp

    @property
    def account(self):
        """
        The authenticated L{IMailAccount}, or L{None}.
        """
        return self._account

    @property
    def smtputf8(self) -> bool:
        return self._transaction is not None and self._transaction.smtputf8

    @property
    def tls_version(self) -> str | None:
        connection = self._tls_connection()
        return connection.get_protocol_version_name() if connection is not None else None

    @property
    def tls_cipher(self) -> str | None:
        connection = self._tls_connection()
        return connection.get_cipher_name() if connection is not None else None

    def _tls_connection(self):
        if not self._tls or self.transport is None:
            return None
        handle = self.transport.getHandle()
        return handle if hasattr(handle, "get_protocol_version_name") else None

    # -- connection ----------------------------------------------------------

    @property
    def limits(self) -> LimitSettings:
        return self.factory.limits

    @property
    def role(self) -> Role:
        return self.factory.role

    def connectionMade(self):
        self.peer = accept(self.transport)
        self._tls = self.role.implicit_tls
        self.setTimeout(self.limits.command_timeout)
        self._counted = self.factory.connection_allowed(self)
        if not self._counted:
            self._send(421, "4.7.0", f"{self.factory.hostname} Too many connections, try later")
            self._close()
            return
        self._send(220, None, f"{self.factory.hostname} ESMTP mailsrv")
        self._flush()

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self._counted:
            self.factory.connection_closed(self)
        self._abort_transaction()

    def timeoutConnection(self):
        self._send(421, "4.4.2", f"{self.factory.hostname} Timeout, closing connection")
        self._close()

    def _close(self):
        self._closing = True
        self._flush()
        self.transport.loseConnection()

    # -- replies -------------------------------------------------------------

    def _send(self, code: int, enhanced: str | None, text: str, more: list[str] = ()):
        """
        Queue a reply (RFC 2034 enhanced code first on every line).
        """
        prefix = f"{enhanced} " if enhanced else ""
        lines = [text, *more]
        for i, line in enumerate(lines):
            separator = "-" if i < len(lines) - 1 else " "
            self._out.append(f"{code}{separator}{prefix}{line}\r\n".encode())

    def _flush(self):
        if self._out:
            self.transport.write(b"".join(self._out))
            self._out = []

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes):
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()

    def _process(self):
        while not self._busy and not self._closing and self._buffer:
            if self._mode.startswith("bdat"):
                if not self._take_chunk():
                    break
                continue
            if self._mode == "data":
                if not self._take_data():
                    break
                continue
            line = self._take_line()
            if line is None:
                break
            self._command(line)
        if not self._busy:
            self._flush()

    def _take_line(self) -> bytes | None:
        """
        The next CRLF-terminated command line (without CRLF), or None until
        one is complete.  An over-long line is cut at the limit and the rest
        of it discarded; C{_line_too_long} tells which.
        """
        limit = MAX_COMMAND_LINE
        end = self._buffer.find(b"\r\n")
        if end == -1:
            if len(self._buffer) > limit:
                keep = self._buffer.endswith(b"\r")
                self._buffer = b"\r" if keep else b""
                self._discarding_line = True
            return None
        line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
        too_long = self._discarding_line or end + 2 > limit
        self._discarding_line = False
        self._line_too_long = too_long
        return line

    # -- commands ------------------------------------------------------------

    def _command(self, line: bytes):
        if self._line_too_long:
            return self._error(500, "5.5.2", "Line too long")
        if self._auth_step is not None:
            return self._run(self._auth_step, line)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(500, "5.5.2", "Command is not UTF-8")
        if not text.isprintable():
            # NUL, bare CR or LF, other controls: never part of a command,
            # and a bare LF in EHLO would split the Received header we write.
            return self._error(500, "5.5.2", "Control character in command")
        verb, _, argument = text.partition(" ")
        handler = getattr(self, "smtp_" + verb.upper(), None)
        if handler is None or not verb.isalpha():
            return self._error(500, "5.5.2", "Command not recognized")
        self._run(handler, argument.strip(" "))

    def _run(self, handler, *args):
        """
        Run a command handler; its reply (or the Reply it raises) is queued.
        An asynchronous handler (one that returns a L{Deferred}) holds
        further input until it is done; the others cost no Deferred.
        """
        try:
            result = handler(*args)
        except Exception:
            return self._failed(Failure())
        if not isinstance(result, Deferred):
            return self._handled(result)
        if not result.called:
            self._busy = True
        result.addCallbacks(self._handled, self._failed)

    def _handled(self, reply):
        if reply is not None:
            self._send(*reply)
        self._resume()

    def _failed(self, failure):
        if failure.check(Reply):
            reply = failure.value
            if reply.code >= 500:
                self._errors += 1
            self._send(reply.code, reply.enhanced, reply.text)
            if reply.code == 421:
                self._close()
        else:
            log.failure("SMTP command failed for {peer}", failure, peer=self.peer)
            self._send(451, "4.3.0", "Internal error, try again later")
        if self._errors >= self.limits.max_errors and not self._closing:
            self._send(421, "4.7.0", "Too many errors, closing connection")
            self._close()
        self._resume()

    def _resume(self):
        if self._busy:
            self._busy = False
            if self.transport is not None and not self._closing:
                self._process()
        if not self._busy:
            self._flush()

    def _error(self, code, enhanced, text):
        self._failed(Failure(Reply(code, enhanced, text)))

    # -- session commands ----------------------------------------------------

    def _extensions(self) -> list[str]:
        extensions = [f"SIZE {self.limits.max_message_size}", "8BITMIME", "PIPELINING",
                      "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"]
        if self.role.offers_starttls and not self._tls and self.factory.tls is not None:
            extensions.append("STARTTLS")
        if self._auth_offered():
            extensions.append("AUTH PLAIN LOGIN")
        return extensions

    def _auth_offered(self) -> bool:
        return self.role.offers_auth and (self._tls or self.factory.allow_plaintext)

    def smtp_EHLO(self, argument):
        if not argument:
            raise Reply(501, "5.5.4", "EHLO needs a domain or address literal")
        self._abort_transaction()
        self._helo, self._esmtp = argument, True
        return (250, None, f"{self.factory.hostname} Hello {argument}", self._extensions())

    def smtp_HELO(self, argument):
        if not argument:
            raise Reply(501, "5.5.4", "HELO needs a domain")
        self._abort_transaction()
        self._helo, self._esmtp = argument, False
        return (250, None, f"{self.factory.hostname} Hello {argument}")

    def smtp_NOOP(self, argument):
        return (250, "2.0.0", "Ok")

    def smtp_RSET(self, argument):
        self._abort_transaction()
        return (250, "2.0.0", "Ok")

    def smtp_QUIT(self, argument):
        self._send(221, "2.0.0", f"{self.factory.hostname} Bye")
        self._close()

    def smtp_VRFY(self, argument):
        # RFC 5321 3.5.3: 252 when the server will not verify.
        return (252, "2.5.0", "Cannot verify the user, but will take the message")

    def smtp_EXPN(self, argument):
        return (502, "5.5.1", "EXPN is not available")

    def smtp_HELP(self, argument):
        return (214, "2.0.0", "See RFC 5321; https://www.rfc-editor.org/rfc/rfc5321")

    def smtp_STARTTLS(self, argument):
        if not self.role.offers_starttls or self.factory.tls is None:
            raise Reply(502, "5.5.1", "STARTTLS is not offered here")
        if self._tls:
            raise Reply(503, "5.5.1", "TLS is already active")
        if argument:
            raise Reply(501, "5.5.4", "STARTTLS takes no argument")
        # RFC 3207 4.2: forget everything; discard whatever the client
        # pipelined after STARTTLS (CVE-2011-0411).
        self._buffer = b""
        self._abort_transaction()
        self._helo, self._esmtp, self._account = None, False, None
        self._send(220, "2.0.0", "Ready to start TLS")
        self._flush()
        self.transport.startTLS(self.factory.tls)
        self._tls = True

    # -- AUTH (RFC 4954) -----------------------------------------------------

    def smtp_AUTH(self, argument):
        if not self.role.offers_auth:
            raise Reply(502, "5.5.1", "AUTH is not offered here")
        if not self._auth_offered():
            # RFC 4954 6: no passwords before TLS.
            raise Reply(538, "5.7.11", "Encryption required for authentication")
        if self._account is not None:
            raise Reply(503, "5.5.1", "Already authenticated")
        if self._transaction is not None:
            raise Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial.encode("ascii", "replace"))
            self._auth_step = self._auth_plain
            return (334, None, "")
        if mechanism == "LOGIN":
            if initial:
                return self._auth_login_user(initial.encode("ascii", "replace"))
            self._auth_step = self._auth_login_user
            return (334, None, base64.b64encode(b"Username:").decode())
        raise Reply(504, "5.5.4", "Unrecognized authentication mechanism")

    def _decode_response(self, line: bytes) -> bytes:
        self._auth_step = None
        if line.strip() == b"*":
            raise Reply(501, "5.0.0", "Authentication cancelled")
        if line.strip() == b"=":
            return b""
        try:
            return base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Reply(501, "5.5.2", "Cannot decode the response") from None

    def _auth_plain(self, line: bytes):
        parts = self._decode_response(line).split(b"\0")
        if len(parts) != 3:
            raise Reply(501, "5.5.2", "Malformed PLAIN response")
        authzid, authcid, password = parts
        if authzid and authzid != authcid:
            return self._auth_failed()
        return self._login(authcid, password)

    def _auth_login_user(self, line: bytes):
        username = self._decode_response(line)
        self._auth_step = lambda reply: self._login(username, self._decode_response(reply))
        return (334, None, base64.b64encode(b"Password:").decode())

    def _login(self, username: bytes, password: bytes) -> Deferred:
        credentials = PeerUsernamePassword(username, password, self.peer)
        d = self.factory.portal.login(credentials, None, IMailAccount)

        def succeeded(result):
            _, account, _ = result
            self._account = account
            log.info("SMTP AUTH {user} from {peer}", user=account.address, peer=self.peer)
            return (235, "2.7.0", "Authentication successful")

        def failed(failure):
            if failure.check(UnauthorizedLogin):
                return self._auth_failed()
            log.failure("SMTP AUTH error", failure)
            raise Reply(454, "4.7.0", "Temporary authentication failure")

        return d.addCallbacks(succeeded, failed)

    def _auth_failed(self):
        self._auth_failures += 1
        if self._auth_failures >= self.limits.max_auth_failures:
            raise Reply(421, "4.7.0", "Too many authentication failures")
        raise Reply(535, "5.7.8", "Authentication credentials invalid")

    # -- mail transaction ----------------------------------------------------

    def _abort_transaction(self):
        transaction, self._transaction = self._transaction, None
        self._bdat_pending = b""
        if transaction is not None:
            for message in transaction.messages:
                message.connectionLost()

    def smtp_MAIL(self, argument):
        if self._helo is None:
            raise Reply(503, "5.5.1", "Send EHLO first")
        if self._transaction is not None:
            raise Reply(503, "5.5.1", "Nested MAIL command")
        if self.role.requires_auth and self._account is None:
            raise Reply(530, "5.7.0", "Authentication required")
        if not argument.upper().startswith("FROM:"):
            raise Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        try:
            sender, parameters = parse_mail_from(argument[5:], smtputf8_allowed=self._esmtp)
        except AddressError as e:
            raise Reply(e.code, e.enhanced, str(e)) from None
        size = self._check_mail_parameters(parameters)
        d = maybeDeferred(self.factory.delivery.validate_sender, self, sender)

        def accepted(delivery):
            self._transaction = Transaction(sender, delivery, "SMTPUTF8" in parameters, size)
            return (250, "2.1.0", "Ok")

        return d.addCallback(accepted).addErrback(self._refused_address, 553, "5.1.7")

    def _check_mail_parameters(self, parameters) -> int | None:
        size = None
        for keyword, value in parameters.items():
            if keyword == "SIZE":
                if value is None or not value.isdigit():
                    raise Reply(501, "5.5.4", "SIZE needs a number")
                size = int(value)
                if size > self.limits.max_message_size:
                    raise Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
            elif keyword == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    raise Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
            elif keyword == "SMTPUTF8":
                if value is not None:
                    raise Reply(501, "5.5.4", "SMTPUTF8 takes no value")
            elif keyword == "AUTH":
                pass  # RFC 4954 5: accepted, not relayed (we are the final hop)
            else:
                raise Reply(555, "5.5.4", f"Unsupported parameter {keyword}")
        return size

    def _refused_address(self, failure, code, enhanced):
        if failure.check(Reply):
            return failure
        if failure.check(SMTPBadSender, SMTPBadRcpt, SMTPServerError):
            error = failure.value
            message = error.resp.decode() if isinstance(error.resp, bytes) else str(error.resp)
            raise Reply(error.code, enhanced if error.code >= 500 else "4.3.0", message)
        return failure

    def smtp_RCPT(self, argument):
        transaction = self._transaction
        if transaction is None:
            raise Reply(503, "5.5.1", "Send MAIL first")
        if not argument.upper().startswith("TO:"):
            raise Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        try:
            recipient, parameters = parse_rcpt_to(argument[3:],
                                                  smtputf8_allowed=transaction.smtputf8)
        except AddressError as e:
            raise Reply(e.code, e.enhanced, str(e)) from None
        if parameters:
            raise Reply(555, "5.5.4", f"Unsupported parameter {next(iter(parameters))}")
        if len(transaction.accepted) >= self.limits.max_recipients:
            raise Reply(452, "4.5.3", "Too many recipients")
        d = maybeDeferred(self.factory.delivery.validate_recipient, self, transaction,
                          recipient)

        def accepted(target):
            transaction.accepted.append(target)
            return (250, "2.1.5", "Ok")

        return d.addCallback(accepted).addErrback(self._refused_address, 550, "5.1.1")

    def smtp_DATA(self, argument):
        if argument:
            raise Reply(501, "5.5.4", "DATA takes no argument")
        self._start_message()
        self._mode = "data"
        self.setTimeout(self.limits.data_timeout)
        return (354, None, "End data with <CR><LF>.<CR><LF>")

    def _start_message(self) -> Transaction:
        transaction = self._transaction
        if transaction is None:
            raise Reply(503, "5.5.1", "Send MAIL first")
        if not transaction.accepted:
            raise Reply(554, "5.5.1", "No valid recipients")
        if not transaction.messages:
            transaction.messages = self.factory.delivery.start_message(self, transaction)
        return transaction

    def _take_data(self) -> bool:
        """
        Take the DATA lines now in the buffer, as one block (RFC 5321
        4.1.1.4): a line "." alone ends the message and a leading dot is
        removed (4.5.2).  Only CRLF ends a line, so a bare LF or CR stays
        inside one and refuses the message (SMTP smuggling, CVE-2023-51766).

        @return: whether anything was taken.
        """
        buffer = self._buffer
        if self._discarding_line:
            # The rest of an over-long line, up to its CRLF.
            end = buffer.find(b"\r\n")
            if end == -1:
                self._buffer = b"\r" if buffer.endswith(b"\r") else b""
                return False
            self._buffer = buffer[end + 2:]
            self._discarding_line = False
            return True
        if buffer.startswith(b".\r\n"):
            self._buffer = buffer[3:]
            return self._end_data()
        end = buffer.find(b"\r\n.\r\n")
        finished = end != -1
        if not finished:
            end = buffer.rfind(b"\r\n")
            if end == -1:
                if len(buffer) >= self.limits.max_line_length:
                    self._refuse(self._line_too_long_reply())
                    self._buffer = b"\r" if buffer.endswith(b"\r") else b""
                    self._discarding_line = True
                return False
        block, self._buffer = buffer[:end + 2], buffer[end + (5 if finished else 2):]
        if block.startswith(b"."):
            block = block[1:]
        self._receive(block.replace(b"\r\n.", b"\r\n"))
        return self._end_data() if finished else True

    def _end_data(self) -> bool:
        self._mode = "command"
        self.setTimeout(self.limits.command_timeout)
        self._run(self._end_of_message)
        return True

    def _line_too_long_reply(self) -> Reply:
        return Reply(554, "5.6.0", f"Line longer than {self.limits.max_line_length} octets "
                     "(RFC 5321 4.5.3.1.6)")

    def _refuse(self, reply: Reply) -> None:
        """
        Refuse the message being received (answered once it ends).
        """
        transaction = self._transaction
        if transaction is not None and transaction.problem is None:
            transaction.problem = reply
            for message in transaction.messages:
                message.connectionLost()

    def _receive(self, block: bytes):
        """
        Pass whole lines (CRLF-terminated, unstuffed) to the messages, or
        refuse the message for what they contain.
        """
        transaction = self._transaction
        if transaction is None or transaction.problem is not None:
            return
        crlf = block.count(b"\r\n")
        if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
            return self._refuse(Reply(554, "5.6.0", "Bare CR or LF in message not allowed "
                                      "(RFC 5321 2.3.8)"))
        if b"\0" in block:
            return self._refuse(Reply(554, "5.6.0", "NUL in message not allowed"))
        # (Splitting is linear; a regex for a long run of non-CRLF octets
        # backtracks at every position, ~1 ms per 5 KB message.)
        if max(map(len, block.split(b"\r\n"))) > self.limits.max_line_length - 2:
            return self._refuse(self._line_too_long_reply())
        transaction.size += len(block)
        if transaction.size > self.limits.max_message_size:
            return self._refuse(Reply(552, "5.3.4",
                                      "Message size exceeds fixed maximum message size"))
        for message in transaction.messages:
            write = getattr(message, "write_data", None)
            if write is not None:
                write(block)
            else:
                for line in block.split(b"\r\n")[:-1]:
                    message.lineReceived(line)

    def _end_of_message(self):
        transaction, self._transaction = self._transaction, None
        if transaction.problem is not None:
            raise transaction.problem
        d = self.factory.delivery.finish_message(transaction)
        return d.addCallback(lambda queue_id: (250, "2.0.0", f"Ok: queued as {queue_id}"))

    # -- BDAT (RFC 3030) -------------------------------------------------------

    def smtp_BDAT(self, argument):
        parts = argument.split()
        if not parts or not parts[0].isdigit() or len(parts) > 2 or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            raise Reply(501, "5.5.4", "Syntax: BDAT <size> [LAST]")
        size, last = int(parts[0]), len(parts) == 2
        try:
            self._start_message()
        except Reply:
            self._bdat_skip(size)
            raise
        self._bdat_remaining, self._bdat_last, self._bdat_size = size, last, size
        self._mode = "bdat"
        return None

    def _bdat_skip(self, size):
        """
        Consume a refused chunk so it is not read as commands.
        """
        self._bdat_remaining, self._bdat_last = size, False
        self._mode = "bdat-skip"

    def _take_chunk(self) -> bool:
        """
        Take BDAT octets from the buffer: whole lines go to the messages as
        they come; the end of the LAST chunk ends the message.
        """
        take = self._buffer[:self._bdat_remaining]
        self._buffer = self._buffer[len(take):]
        self._bdat_remaining -= len(take)
        if self._mode == "bdat":
            data = self._bdat_pending + take
            end = data.rfind(b"\r\n") + 2
            self._bdat_pending = data[end:]
            if end:
                self._receive(data[:end])
        if self._bdat_remaining:
            return False
        if self._mode == "bdat-skip":
            self._mode = "command"
            return True
        self._mode = "command"
        if not self._bdat_last:
            self._send(250, "2.0.0", f"Ok, {self._bdat_size} octets")
            return True
        if self._bdat_pending:
            # A last line without CRLF: stored as a line, like the rest.
            self._receive(self._bdat_pending + b"\r\n")
            self._bdat_pending = b""
        self._run(self._end_of_message)
        return True


class SMTPFactory(Factory):
    """
    The sessions of one SMTP listener.

    @param delivery: the L{mailsrv.smtp.delivery.SessionDelivery} that
        checks senders and recipients and stores messages.
    @param limiter: connection limits shared with the other SMTP listeners.
    """

    protocol = SMTPServer
    noisy = False

    def __init__(self, role: Role, settings: Settings, tls, portal, delivery,
                 limiter: ConnectionLimiter):
        self.role = role
        self.limits = settings.limits
        self.hostname = settings.server.hostname
        self.allow_plaintext = settings.auth.allow_plaintext
        self.tls = tls
        self.portal = portal
        self.delivery = delivery
        self._limiter = limiter

    def connection_allowed(self, session: SMTPServer) -> bool:
        return self._limiter.acquire(session.peer)

    def connection_closed(self, session: SMTPServer) -> None:
        self._limiter.release(session.peer)
