"""
A scriptable ESMTP server for tests of outbound delivery.

It runs in the test process, on trial's reactor, and answers each command
with whatever the test scripts, so that tests can produce on demand what
real servers do only rarely: a 451 and then a 250, a 5xx for one recipient,
a refused greeting, a server that greets and then never answers.

    sink = SMTPSink()
    port = sink.listen()
    self.addCleanup(sink.stop)
    sink.rcpt_reply = lambda address, attempt: (
        (451, "4.3.0 Try later") if attempt == 1 else (250, "2.1.5 OK"))
    [message] = await sink.wait_for_messages(1)

It is our own small protocol rather than twisted.mail's server, whose
STARTTLS and DATA handling have known defects.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsrv.tls import ServerTLS
from tests.server import write_test_certificate

Reply = tuple[int, str]

_MAIL = re.compile(r"FROM:\s*<([^>]*)>\s*(.*)", re.IGNORECASE)
_RCPT = re.compile(r"TO:\s*<([^>]*)>\s*(.*)", re.IGNORECASE)


@dataclass
class ReceivedMessage:
    """
    A message as the sink saw it at the end of DATA.
    """

    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    helo: str
    mail_parameters: list[str]


def sink_tls(directory: Path) -> tuple[ServerTLS, Path]:
    """
    A STARTTLS context for the sink from a fresh test CA in C{directory}.

    @return: the context and the CA path that clients should trust.
    """
    ca_path, cert_path, key_path = write_test_certificate(directory)
    return ServerTLS(cert_path, key_path), ca_path


class SMTPSink:
    """
    A scriptable SMTP server on 127.0.0.1 for tests.

    C{mail_reply(sender)}, C{rcpt_reply(address, attempt)} and
    C{data_reply(message, attempt)} choose each reply; attempts count from 1
    across sessions (per address for RCPT).  Only a 2xx to DATA adds the
    message to C{received}; a C{data_reply} of L{None} never answers.
    """

    def __init__(self, reactor=None, tls=None, auth: dict[str, str] | None = None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.tls = tls
        self.auth = auth
        self.received: list[ReceivedMessage] = []
        self.sessions = 0
        self.greeting: Reply = (220, "sink ESMTP")
        self.hang_after_greeting = False
        self.mail_reply: Callable[[str], Reply] = lambda sender: (250, "2.1.0 OK")
        self.rcpt_reply: Callable[[str, int], Reply] = lambda address, attempt: (
            250, "2.1.5 OK")
        self.data_reply: Callable[[ReceivedMessage, int], Reply] = lambda message, attempt: (
            250, "2.0.0 OK")
        self.rcpt_attempts: dict[str, int] = {}
        self.data_attempts = 0
        self.connections: set[_SinkProtocol] = set()
        self._waiters: list[tuple[int, Deferred]] = []
        self._port = None

    def listen(self, port: int = 0, *, implicit_tls: bool = False) -> int:
        """
        Listen on 127.0.0.1, on C{port} or a free one; return the port.

        @param implicit_tls: speak TLS from the first byte (RFC 8314) with
            the sink's C{tls} context, instead of offering STARTTLS.
        """
        factory = _SinkFactory()
        factory.sink = self
        factory.implicit_tls = implicit_tls
        if implicit_tls:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        self._port = self.reactor.listenTCP(port, factory, interface="127.0.0.1")
        return self._port.getHost().port

    def stop(self) -> Deferred:
        """
        Stop listening and close every session (replies already written are
        sent first; a peer that does not let go is cut off after a second).
        """
        waiting = [connection.close() for connection in list(self.connections)]
        if self._port is not None:
            waiting.append(self._port.stopListening())
            self._port = None
        return gatherResults(waiting).addCallback(lambda _: None)

    def wait_for_messages(self, count: int, timeout: float = 20.0) -> Deferred:
        """
        Fire with C{received} once it holds C{count} messages.
        """
        if len(self.received) >= count:
            return succeed(self.received)
        waiter = Deferred(lambda d: self._waiters.remove((count, d)))
        self._waiters.append((count, waiter))

        def timed_out(failure):
            failure.trap(defer.TimeoutError)
            raise AssertionError(
                f"expected {count} messages within {timeout}s, received "
                f"{len(self.received)} in {self.sessions} sessions")

        return waiter.addTimeout(timeout, self.reactor).addErrback(timed_out)

    def _deliver(self, message: ReceivedMessage) -> None:
        self.received.append(message)
        for count, waiter in list(self._waiters):
            if len(self.received) >= count:
                self._waiters.remove((count, waiter))
                waiter.callback(self.received)


class _SinkFactory(Factory):
    noisy = False
    sink: SMTPSink

    implicit_tls = False

    def buildProtocol(self, addr):
        protocol = _SinkProtocol(self.sink)
        protocol.tls = self.implicit_tls
        return protocol


class _SinkProtocol(LineOnlyReceiver):
    MAX_LENGTH = 1 << 20

    def __init__(self, sink: SMTPSink):
        self.sink = sink
        self.closed = Deferred()
        self.tls = False
        self.authenticated = False
        self.helo: str | None = None
        self.handler = self.command
        self.discard_buffered = False
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.mail_parameters: list[str] = []
        self.recipients: list[str] = []
        self.lines: list[bytes] = []

    def reply(self, code: int, text: str) -> None:
        """
        One reply in one write; a multi-line C{text} becomes a multi-line reply.
        """
        lines = text.split("\n")
        out = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]
        self.transport.write("\r\n".join(out).encode() + b"\r\n")

    def close(self) -> Deferred:
        self.transport.loseConnection()
        abort = self.sink.reactor.callLater(1.0, self.transport.abortConnection)

        def closed(_):
            if abort.active():
                abort.cancel()

        return self.closed.addCallback(closed)

    def connectionMade(self):
        self.sink.connections.add(self)
        self.sink.sessions += 1
        self.transport.setTcpNoDelay(True)
        code, text = self.sink.greeting
        self.reply(code, text)
        if self.sink.hang_after_greeting:
            self.handler = lambda line: None
        elif code == 421:
            self.transport.loseConnection()
        elif code != 220:
            self.handler = self.refused

    def connectionLost(self, reason):
        self.sink.connections.discard(self)
        self.closed.callback(None)

    def dataReceived(self, data):
        super().dataReceived(data)
        if self.discard_buffered:
            # RFC 3207 4.2: nothing the client sent before the handshake counts.
            self._buffer = b""
            self.discard_buffered = False

    def lineReceived(self, line):
        if not self.discard_buffered:
            self.handler(line)

    def refused(self, line: bytes) -> None:
        """
        After a 554 greeting, wait for QUIT (RFC 5321 3.1).
        """
        if line.upper() == b"QUIT":
            self.cmd_quit("")
        else:
            self.reply(503, "5.5.1 No service")

    def command(self, line: bytes) -> None:
        verb, _, argument = line.decode("utf-8", "replace").partition(" ")
        method = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
        if method is None:
            self.reply(500, "5.5.2 Unknown command")
        else:
            method(argument.strip())

    def cmd_ehlo(self, argument: str) -> None:
        if not argument:
            return self.reply(501, "5.5.4 EHLO needs a domain")
        self.helo = argument
        self.reset()
        lines = ["sink", "PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE", "ENHANCEDSTATUSCODES"]
        if self.sink.tls is not None and not self.tls:
            lines.append("STARTTLS")
        if self.auth_offered():
            lines.append("AUTH PLAIN LOGIN")
        self.reply(250, "\n".join(lines))

    def cmd_helo(self, argument: str) -> None:
        if not argument:
            return self.reply(501, "5.5.4 HELO needs a domain")
        self.helo = argument
        self.reset()
        self.reply(250, "sink")

    def cmd_starttls(self, argument: str) -> None:
        if self.sink.tls is None:
            return self.reply(502, "5.5.1 STARTTLS not offered")
        if self.tls or argument:
            return self.reply(503 if self.tls else 501, "5.5.1 Not now")
        self.reply(220, "2.0.0 Ready to start TLS")
        self.transport.startTLS(self.sink.tls)
        self.tls = True
        self.helo = None
        self.authenticated = False
        self.reset()
        self.discard_buffered = True

    def auth_offered(self) -> bool:
        return bool(self.sink.auth) and (self.tls or self.sink.tls is None)

    def cmd_auth(self, argument: str) -> None:
        if not self.sink.auth:
            return self.reply(502, "5.5.1 AUTH not offered")
        if not self.auth_offered():
            return self.reply(538, "5.7.11 Encryption required")
        if self.helo is None or self.authenticated or self.sender is not None:
            return self.reply(503, "5.5.1 Not now")
        mechanism, _, initial = argument.partition(" ")
        if mechanism.upper() == "PLAIN":
            then = self.auth_plain
            prompt = ""
        elif mechanism.upper() == "LOGIN":
            def then(user):
                self.challenge("UGFzc3dvcmQ6", lambda password: self.check(user, password))
            prompt = "VXNlcm5hbWU6"
        else:
            return self.reply(504, "5.5.4 Unknown mechanism")
        if initial:
            self.response(initial.encode(), then)
        else:
            self.challenge(prompt, then)

    def challenge(self, prompt: str, then: Callable[[bytes], None]) -> None:
        self.reply(334, prompt)
        self.handler = lambda line: self.response(line, then)

    def response(self, line: bytes, then: Callable[[bytes], None]) -> None:
        """
        Decode one client response of an AUTH exchange (RFC 4954 4).
        """
        self.handler = self.command
        if line == b"*":
            return self.reply(501, "5.0.0 Authentication cancelled")
        try:
            decoded = b"" if line == b"=" else base64.b64decode(line, validate=True)
        except binascii.Error:
            return self.reply(501, "5.5.2 Cannot decode response")
        then(decoded)

    def auth_plain(self, decoded: bytes) -> None:
        parts = decoded.split(b"\0")
        if len(parts) != 3 or parts[0] not in (b"", parts[1]):
            return self.reply(535, "5.7.8 Authentication credentials invalid")
        self.check(parts[1], parts[2])

    def check(self, user: bytes, password: bytes) -> None:
        expected = self.sink.auth.get(user.decode("utf-8", "replace"))
        if expected is None or expected != password.decode("utf-8", "replace"):
            return self.reply(535, "5.7.8 Authentication credentials invalid")
        self.authenticated = True
        self.reply(235, "2.7.0 Authentication successful")

    def cmd_mail(self, argument: str) -> None:
        if self.helo is None:
            return self.reply(503, "5.5.1 Send EHLO first")
        if self.sender is not None:
            return self.reply(503, "5.5.1 Nested MAIL command")
        if self.sink.auth and not self.authenticated:
            return self.reply(530, "5.7.0 Authentication required")
        match = _MAIL.fullmatch(argument)
        if match is None:
            return self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
        code, text = self.sink.mail_reply(match[1])
        if 200 <= code < 300:
            self.sender = match[1]
            self.mail_parameters = match[2].split()
        self.reply(code, text)

    def cmd_rcpt(self, argument: str) -> None:
        if self.sender is None:
            return self.reply(503, "5.5.1 Need MAIL first")
        match = _RCPT.fullmatch(argument)
        if match is None:
            return self.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
        address = match[1]
        attempts = self.sink.rcpt_attempts
        attempts[address] = attempts.get(address, 0) + 1
        code, text = self.sink.rcpt_reply(address, attempts[address])
        if 200 <= code < 300:
            self.recipients.append(address)
        self.reply(code, text)

    def cmd_data(self, argument: str) -> None:
        if not self.recipients:
            return self.reply(503, "5.5.1 Need RCPT first")
        self.reply(354, "End data with <CR><LF>.<CR><LF>")
        self.handler = self.data_line

    def data_line(self, line: bytes) -> None:
        if line != b".":
            # RFC 5321 4.5.2: remove one leading dot.
            self.lines.append(line[1:] if line.startswith(b".") else line)
            return
        self.handler = self.command
        message = ReceivedMessage(self.sender, self.recipients,
                                  b"\r\n".join([*self.lines, b""]), self.tls,
                                  self.helo, self.mail_parameters)
        self.reset()
        self.sink.data_attempts += 1
        reply = self.sink.data_reply(message, self.sink.data_attempts)
        if reply is None:
            # Never answer the end of data (to test the client's timeout).
            self.handler = lambda line: None
            return
        code, text = reply
        self.reply(code, text)
        if 200 <= code < 300:
            self.sink._deliver(message)

    def cmd_rset(self, argument: str) -> None:
        self.reset()
        self.reply(250, "2.0.0 OK")

    def cmd_noop(self, argument: str) -> None:
        self.reply(250, "2.0.0 OK")

    def cmd_quit(self, argument: str) -> None:
        self.reply(221, "2.0.0 Bye")
        self.transport.loseConnection()
