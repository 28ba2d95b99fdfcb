"""
The SMTP client that carries queued mail to the next hop: RFC 5321 with
PIPELINING (RFC 2920), SIZE, 8BITMIME, SMTPUTF8, STARTTLS by policy
(RFC 3207) and AUTH PLAIN (RFC 4954).

It is our own protocol class, like the servers: twisted.mail's
C{SMTPClient} dot-stuffs each 16 KiB chunk on its own, so a line starting
with "." at a chunk boundary ends DATA early and the rest of the message
reaches the next hop as commands (twisted-mail-notes.md 2.4).
L{mailsrv.dots.DotStuffer} carries the line state from one chunk to the next.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from mailsrv.dots import DotStuffer
from mailsrv.tls import client_tls

#: Bytes of a queued message read from disk at a time.
CHUNK = 256 * 1024


@dataclass(frozen=True)
class SMTPReply:
    """
    A complete reply; multi-line replies keep every line's text.
    """

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def status(self) -> str:
        """
        The enhanced status code (RFC 3463) the server gave, or the one its
        reply code implies.
        """
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] == str(self.code)[0]:
            return first
        return f"{str(self.code)[0]}.0.0"

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionFailed(Exception):
    """
    No usable session with this host: refused, timed out, dropped, refused
    TLS, or a greeting that is not 220.  The next host may do better.

    @ivar tls_failed: the TLS handshake itself failed (an opportunistic
        sender may try again in plain text).
    @ivar reply: the server's reply, when it gave one.
    """

    def __init__(self, text: str, *, tls_failed: bool = False, reply: SMTPReply | None = None):
        super().__init__(text)
        self.tls_failed = tls_failed
        self.reply = reply


@implementer(IPushProducer)
class SMTPClientProtocol(LineOnlyReceiver):
    """
    One connection: sends commands and hands back the replies in order, so
    that several commands may be in flight (PIPELINING).
    """

    delimiter = b"\r\n"
    #: RFC 5321 4.5.3.1.5 allows 512 octets per reply line; be lenient.
    MAX_LENGTH = 8192

    def __init__(self, reactor, timeout: float):
        self._reactor = reactor
        self.timeout = timeout
        self._lines: list[str] = []
        self._waiting: deque[tuple[Deferred, float]] = deque()
        self._paused: Deferred | None = None
        self._lost = None
        self._timer = None

    def connectionMade(self):
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)

    def lineReceived(self, line: bytes):
        text = line.decode("utf-8", "replace")
        code, separator, rest = text[:3], text[3:4], text[4:]
        if not code.isdigit() or separator not in ("-", " ", ""):
            self._abort("a reply that is not SMTP: " + text[:80])
            return
        self._lines.append(rest)
        if separator == "-":
            return
        reply = SMTPReply(int(code), tuple(self._lines))
        self._lines = []
        if self._waiting:
            d, _ = self._waiting.popleft()
            self._restart_timer()
            d.callback(reply)
        else:
            self._abort(f"an unexpected reply: {reply}")

    def lineLengthExceeded(self, line):
        self._abort("a reply line longer than 8192 octets")

    def _abort(self, why: str):
        self._lost = ConnectionFailed(f"the server sent {why}")
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self._cancel_timer()
        if self._lost is None:
            error = reason.value
            text = str(error) or error.__class__.__name__
            self._lost = ConnectionFailed(f"connection lost: {text}",
                                          tls_failed="SSL" in error.__class__.__module__
                                          or "SSL" in text)
        waiting, self._waiting = self._waiting, deque()
        for d, _ in waiting:
            d.errback(self._lost)
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.errback(self._lost)

    def next_reply(self, timeout: float | None = None) -> Deferred:
        """
        The next reply not yet claimed, failing with L{ConnectionFailed} if
        the connection is lost or no reply comes within the timeout.
        """
        if self._lost is not None:
            return fail(self._lost)
        d = Deferred()
        self._waiting.append((d, timeout or self.timeout))
        if len(self._waiting) == 1:
            self._start_timer(timeout or self.timeout)
        return d

    def send(self, *commands: str, timeout: float | None = None) -> list[Deferred]:
        """
        Write commands in one packet; a L{Deferred} of the reply to each.
        """
        self.transport.write("".join(c + "\r\n" for c in commands).encode("utf-8"))
        return [self.next_reply(timeout) for _ in commands]

    async def command(self, line: str, timeout: float | None = None) -> SMTPReply:
        return await self.send(line, timeout=timeout)[0]

    def _start_timer(self, timeout: float):
        self._cancel_timer()
        self._timer = self._reactor.callLater(timeout, self._timed_out, timeout)

    def _restart_timer(self):
        if self._waiting:
            self._start_timer(self._waiting[0][1])
        else:
            self._cancel_timer()

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self, timeout: float):
        self._timer = None
        self._lost = ConnectionFailed(f"no reply within {timeout:g} seconds")
        self.transport.abortConnection()

    def pauseProducing(self):
        if self._paused is None:
            self._paused = Deferred()
            self._start_timer(self.timeout)

    def resumeProducing(self):
        if self._paused is not None:
            paused, self._paused = self._paused, None
            self._restart_timer()
            paused.callback(None)

    def stopProducing(self):
        pass

    def writable(self) -> Deferred:
        """
        Fires when the transport wants more data (back-pressure).
        """
        if self._lost is not None:
            raise self._lost
        return self._paused if self._paused is not None else succeed(None)


@dataclass(frozen=True)
class ClientSettings:
    """
    What every outbound connection shares: our EHLO name and the timeouts
    of RFC 5321 4.5.3.2.
    """

    hostname: str
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    ca_file: Path | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """
    What the client needs to know of a queued message besides its bytes.
    """

    sender: str
    size: int
    eight_bit: bool = False
    smtputf8: bool = False


async def open_session(reactor, destination, host: str, address: str,
                       settings: ClientSettings, *, starttls: bool = True) -> SMTPSession:
    """
    Connect to one address of one host of a L{Destination}, and get the
    session ready for mail: greeting, EHLO, STARTTLS as its policy wants
    (RFC 3207), AUTH when it has credentials (RFC 4954).

    @param starttls: C{False} to stay in plain text, for an opportunistic
        retry after a failed handshake.
    @raise ConnectionFailed: if this host cannot take mail now.
    """
    where = f"{host}[{address}]:{destination.port}"
    endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
    endpoint = endpoint_type(reactor, address, destination.port,
                             timeout=settings.connect_timeout)
    if destination.implicit_tls:
        endpoint = wrapClientTLS(client_tls(destination.tls, host, settings.ca_file), endpoint)
    protocol = SMTPClientProtocol(reactor, settings.command_timeout)
    try:
        await connectProtocol(endpoint, protocol)
    except ConnectError as e:
        raise ConnectionFailed(f"cannot connect to {where}: {e}") from None
    try:
        greeting = await protocol.next_reply()
        if greeting.code != 220:
            raise ConnectionFailed(f"{where} greeted with {greeting}", reply=greeting)
        extensions = await _hello(protocol, settings.hostname, where)
        secure = destination.implicit_tls
        if not secure and destination.tls != "none" and starttls:
            secure, extensions = await _start_tls(protocol, destination, host, where,
                                                  extensions, settings)
        if destination.username:
            if not secure and destination.tls != "none":
                raise ConnectionFailed(f"{where}: not sending the password without TLS")
            await _authenticate(protocol, extensions, destination, where)
    except BaseException:
        protocol.transport.abortConnection()
        raise
    return SMTPSession(protocol, settings, where, extensions, secure)


async def _hello(protocol: SMTPClientProtocol, hostname: str, where: str) -> dict[str, str]:
    """
    EHLO, or HELO from a server that does not know EHLO (RFC 5321 3.2).

    @return: the extensions the server offers, keyword to parameters.
    """
    reply = await protocol.command(f"EHLO {hostname}")
    if reply.code == 250:
        extensions = {}
        for line in reply.lines[1:]:
            keyword, _, parameters = line.partition(" ")
            extensions[keyword.upper()] = parameters
        return extensions
    if reply.permanent:
        reply = await protocol.command(f"HELO {hostname}")
        if reply.code == 250:
            return {}
    raise ConnectionFailed(f"{where} refused EHLO: {reply}", reply=reply)


async def _start_tls(protocol, destination, host, where, extensions, settings):
    """
    STARTTLS when offered; a policy other than opportunistic makes a
    session without it fail.
    """
    required = destination.tls != "opportunistic"
    if "STARTTLS" not in extensions:
        if required:
            raise ConnectionFailed(f"{where} does not offer STARTTLS, which tls = "
                                   f"{destination.tls!r} requires")
        return False, extensions
    reply = await protocol.command("STARTTLS")
    if reply.code != 220:
        if required:
            raise ConnectionFailed(f"{where} refused STARTTLS: {reply}", reply=reply)
        return False, extensions
    protocol.transport.startTLS(client_tls(destination.tls, host, settings.ca_file))
    # RFC 3207 4.2: forget what was learnt before TLS and ask again.
    return True, await _hello(protocol, settings.hostname, where)


async def _authenticate(protocol, extensions, destination, where) -> None:
    mechanisms = extensions.get("AUTH", "").upper().split()
    user = destination.username.encode("utf-8")
    password = destination.password.encode("utf-8")
    if "PLAIN" in mechanisms:
        token = base64.b64encode(b"\0" + user + b"\0" + password).decode("ascii")
        reply = await protocol.command(f"AUTH PLAIN {token}")
    elif "LOGIN" in mechanisms:
        reply = await protocol.command("AUTH LOGIN")
        for secret in (user, password):
            if reply.code != 334:
                break
            reply = await protocol.command(base64.b64encode(secret).decode("ascii"))
    else:
        raise ConnectionFailed(f"{where} offers no AUTH mechanism we know (PLAIN, LOGIN)")
    if reply.code != 235:
        raise ConnectionFailed(f"{where} refused our credentials: {reply}", reply=reply)


class SMTPSession:
    """
    An open session ready for mail, used for one message after another.

    @ivar where: C{host[address]:port}, for logs and bounces.
    @ivar tls: whether the session is encrypted.
    """

    def __init__(self, protocol: SMTPClientProtocol, settings: ClientSettings, where: str,
                 extensions: dict[str, str], tls: bool):
        self._protocol = protocol
        self._settings = settings
        self.where = where
        self.extensions = extensions
        self.tls = tls
        self._dirty = False

    async def send(self, message: OutboundMessage, recipients: list[str],
                   read) -> dict[str, SMTPReply]:
        """
        One mail transaction.

        @param read: returns a L{Deferred} of the message's next chunk,
            C{b""} at the end.
        @return: each recipient's outcome: the RCPT reply that refused it,
            or the reply to the end of data.
        @raise ConnectionFailed: if the session breaks; the outcome is then
            unknown and the message must be tried again.
        """
        protocol = self._protocol
        if self._dirty:
            await protocol.command("RSET")
        self._dirty = True
        parameters = ""
        if "SIZE" in self.extensions:
            parameters += f" SIZE={message.size}"
        if message.eight_bit and "8BITMIME" in self.extensions:
            parameters += " BODY=8BITMIME"
        if message.smtputf8:
            if "SMTPUTF8" not in self.extensions:
                # RFC 6531 3.4: such a message cannot go to this server.
                refused = SMTPReply(553, ("5.6.7 The next hop does not support SMTPUTF8",))
                return dict.fromkeys(recipients, refused)
            parameters += " SMTPUTF8"
        commands = [f"MAIL FROM:<{message.sender}>{parameters}"]
        commands += [f"RCPT TO:<{r}>" for r in recipients]
        if "PIPELINING" in self.extensions:
            replies = protocol.send(*commands, "DATA")
        else:
            replies = _one_by_one(protocol, commands)
        answers = await _all(replies)
        mail = answers[0]
        outcomes = {recipient: reply if mail.positive else mail
                    for recipient, reply in zip(recipients, answers[1:], strict=False)}
        accepted = [r for r in recipients if outcomes[r].positive]
        data = answers[-1] if len(answers) > len(recipients) + 1 else None
        if data is None and accepted:
            data = await protocol.command("DATA")
        if data is None or data.code != 354:
            return {r: data if r in accepted else outcomes[r] for r in recipients}
        if accepted:
            await self._write_message(read)
        else:
            # RFC 2920 3.1: DATA was accepted with no recipient; end it empty.
            protocol.transport.write(b".\r\n")
        end = await protocol.next_reply(self._settings.data_timeout)
        self._dirty = not end.positive
        return {r: end if r in accepted else outcomes[r] for r in recipients}

    async def _write_message(self, read) -> None:
        stuffer = DotStuffer()
        transport = self._protocol.transport
        transport.registerProducer(self._protocol, True)
        try:
            while chunk := await read():
                transport.write(stuffer.stuff(chunk))
                await self._protocol.writable()
        except BaseException:
            # Never end DATA on a partial message: the far end would send it.
            transport.abortConnection()
            raise
        finally:
            transport.unregisterProducer()
        transport.write(stuffer.end())

    async def quit(self) -> None:
        """
        End the session politely; errors do not matter any more.
        """
        try:
            await self._protocol.command("QUIT", timeout=10)
        except ConnectionFailed:
            pass
        self._protocol.transport.loseConnection()

    def abort(self) -> None:
        self._protocol.transport.abortConnection()


def _one_by_one(protocol: SMTPClientProtocol, commands: list[str]) -> list[Deferred]:
    """
    Without PIPELINING, send each command once the previous one is answered
    (stopping at a refused MAIL), with the same shape of result.
    """
    results = [Deferred() for _ in commands]

    async def run():
        refused = None
        for command, result in zip(commands, results, strict=True):
            if refused is not None:
                result.callback(refused)
                continue
            reply = await protocol.command(command)
            if command.startswith("MAIL") and not reply.positive:
                refused = reply
            result.callback(reply)

    Deferred.fromCoroutine(run()).addErrback(
        lambda failure: [r.errback(failure) for r in results if not r.called])
    return results


async def _all(replies: list[Deferred]) -> list[SMTPReply]:
    """
    Every reply, or the first failure (the others are consumed with it).
    """
    try:
        return await gatherResults(replies, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
