"""
The IMAP4rev1 protocol (RFC 3501): lines and literals off the wire, TLS,
timeouts and connection limits.  What each command does is
L{mailsrv.imap.session.Session}'s job.

Commands run one at a time, in the order they arrive; while one waits for
the store, later input waits in the buffer.  Every response of a command
goes out in as few writes as possible (TCP_NODELAY is on).
"""

from __future__ import annotations

import io
import tempfile
from collections import Counter

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mailsrv.config import Settings
from mailsrv.connections import ConnectionLimiter, CountedConnection
from mailsrv.imap.parser import (
    BadCharset,
    Literal,
    ParseError,
    literal_at_end,
    parse_command,
    tag_of,
)
from mailsrv.imap.session import Session
from mailsrv.logs import get_logger

log = get_logger(__name__)

#: Literals up to this size stay in memory; bigger ones (APPEND) go to a
#: temporary file.
IN_MEMORY = 1024 * 1024


class _LiteralReader:
    """
    Collects one literal's bytes as they arrive.
    """

    def __init__(self, size: int, keep: bool):
        self.left = size
        self.size = size
        self._keep = keep
        # A refused literal is read and dropped: no temporary file for it.
        self._file = tempfile.TemporaryFile(prefix="mailsrv-literal-") \
            if keep and size > IN_MEMORY else io.BytesIO()

    def write(self, data: bytes) -> None:
        self.left -= len(data)
        if self._keep:
            self._file.write(data)

    def literal(self) -> Literal:
        if isinstance(self._file, io.BytesIO):
            return Literal(data=self._file.getvalue(), size=self.size)
        self._file.seek(0)
        return Literal(file=self._file, size=self.size)


class IMAPServer(CountedConnection, Protocol, TimeoutMixin):
    """
    One IMAP connection.  While a long response is written (FETCH), it is
    the transport's producer, so that a client that reads slowly slows the
    server down instead of filling its memory.

    @ivar tls: whether the connection is encrypted (implicit TLS or after
        STARTTLS).
    @ivar peer: the client's IP address.
    """

    def __init__(self):
        self._buffer = b""
        self._pieces: list = []
        self._literal: _LiteralReader | None = None
        self._refused: str | None = None
        self._discarding_line = False
        self._busy = False
        self._closing = False
        self._out: list[bytes] = []
        self.session: Session | None = None

    @property
    def limits(self):
        return self.factory.settings.limits

    # Connection

    def connectionMade(self):
        if not self.admit():
            self.write(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
            self.close()
            return
        self.session = Session(self, self.factory)
        self.setTimeout(self.limits.command_timeout)
        self.write(self.session.greeting())
        self.flush()

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self.session is not None:
            self.session.connection_lost()
        self.release(reason)

    def timeoutConnection(self):
        # RFC 3501 5.4: the autologout timer.
        self.write(b"* BYE Autologout; idle for too long\r\n")
        self.close()

    def authenticated(self):
        """
        After login the timeout becomes the autologout of RFC 3501 5.4.
        """
        self.setTimeout(self.limits.idle_timeout)

    def close(self):
        self._closing = True
        self.flush()
        self.transport.loseConnection()

    def start_tls(self):
        """
        Switch to TLS, discarding whatever the client sent after STARTTLS
        (RFC 3501 6.2.1; the injection twisted.mail allows, notes 1.5 #10).
        """
        self._buffer = b""
        self.flush()
        self.transport.startTLS(self.factory.tls)
        self.tls = True

    # Output

    def write(self, data: bytes) -> None:
        self._out.append(data)

    def flush(self) -> None:
        if self._out and self.transport is not None:
            self.transport.write(b"".join(self._out))
            self._out = []

    def start_streaming(self) -> None:
        self.transport.registerProducer(self, True)

    def stop_streaming(self) -> None:
        if self.transport is not None:
            self.transport.unregisterProducer()

    # Input

    def dataReceived(self, data: bytes):
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        self._process()

    def read_line(self) -> Deferred:
        """
        The next line the client sends, not as a command: an AUTHENTICATE
        response or IDLE's DONE.
        """
        self._line_waiter = Deferred()
        return self._line_waiter

    def _process(self):
        while not self._closing and self._buffer and (not self._busy
                                                       or self._line_waiter is not None):
            if self._literal is not None:
                self._take_literal()
                continue
            line = self._take_line()
            if line is None:
                break
            if self._line_waiter is not None:
                waiter, self._line_waiter = self._line_waiter, None
                waiter.callback(line)
                continue
            self._line(line)
        if not self._busy:
            self.flush()

    def _take_line(self) -> bytes | None:
        """
        The next line without CRLF, or None until one is complete.  A line
        over the limit is cut and refused (with the tag it started with).
        """
        limit = self.limits.max_command_length
        while True:
            end = self._buffer.find(b"\r\n")
            if end == -1:
                if len(self._buffer) > limit:
                    if not self._discarding_line:
                        self._refuse_line(self._buffer[:200])
                    keep = self._buffer.endswith(b"\r")
                    self._buffer = b"\r" if keep else b""
                    self._discarding_line = True
                return None
            line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            if self._discarding_line:
                self._discarding_line = False
            elif end > limit:
                self._refuse_line(line[:200])
            else:
                return line

    def _refuse_line(self, start: bytes) -> None:
        self._pieces = []
        tag = tag_of(start)
        self.write(f"{tag} BAD Line too long (limit {self.limits.max_command_length} "
                   f"octets)\r\n".encode())
        self._count_error()

    def _line(self, line: bytes) -> None:
        self._pieces.append(line)
        try:
            literal = literal_at_end(line)
        except ParseError as e:
            self._pieces = []
            self._bad(e)
            return
        if literal is None:
            pieces, self._pieces = self._pieces, []
            if self._refused is not None:
                refused, self._refused = self._refused, None
                self.write(refused.encode())
                return
            self._dispatch(pieces)
            return
        size, synchronizing = literal
        limit = self._literal_limit()
        if size > limit and self._refused is None:
            tag = tag_of(self._pieces[0])
            self._refused = (f"{tag} NO [TOOBIG] Literal of {size} octets is over the limit "
                             f"of {limit}\r\n")
            if synchronizing:
                # RFC 3501 7.5: without "+" the client sends no literal.
                self._pieces = []
                refused, self._refused = self._refused, None
                self.write(refused.encode())
                return
        if synchronizing:
            self.write(b"+ Ready for literal data\r\n")
            self.flush()
        self._literal = _LiteralReader(size, keep=self._refused is None)
        if size == 0:
            self._finish_literal()

    def _literal_limit(self) -> int:
        words = self._pieces[0].split(b" ", 3)
        command = [w.upper() for w in words[1:3]]
        if command and command[0] == b"APPEND":
            return self.factory.settings.limits.max_message_size
        return self.factory.settings.limits.max_literal_size

    def _take_literal(self) -> None:
        reader = self._literal
        data, self._buffer = self._buffer[:reader.left], self._buffer[reader.left:]
        reader.write(data)
        if reader.left == 0:
            self._finish_literal()

    def _finish_literal(self) -> None:
        self._pieces.append(self._literal.literal())
        self._literal = None

    def _dispatch(self, pieces: list) -> None:
        try:
            command = parse_command(pieces)
        except ParseError as e:
            self._bad(e)
            return
        try:
            result = self.session.run(command)
        except Exception:
            self._failed(Failure(), command.tag)
            return
        if isinstance(result, Deferred) and not result.called:
            self._busy = True
            result.addErrback(self._failed, command.tag).addBoth(self._resume)
        elif isinstance(result, Deferred):
            result.addErrback(self._failed, command.tag)

    def _bad(self, error: ParseError) -> None:
        if isinstance(error, BadCharset):
            self.write(f"{error.tag} NO [BADCHARSET (UTF-8 US-ASCII)] {error}\r\n".encode())
            return
        self.write(f"{error.tag} BAD {error}\r\n".encode("utf-8", "replace"))
        self._count_error()

    def _count_error(self) -> None:
        if self.session is not None and self.session.count_error():
            self.write(b"* BYE Too many errors\r\n")
            self.close()

    def _failed(self, failure: Failure, tag: str) -> None:
        if failure.check(ConnectionDone, ConnectionLost):
            return  # the client left mid-command (during IDLE, typically)
        log.failure("IMAP command failed for {peer}", failure, peer=self.peer)
        self.write(f"{tag} NO [SERVERBUG] Internal error, try again later\r\n".encode())

    def _resume(self, _=None) -> None:
        self._busy = False
        if self.transport is not None and not self._closing:
            self._process()
        self.flush()


class IMAPFactory(Factory):
    """
    The sessions of the IMAP listeners.

    @param run: runs blocking reads of large messages in a thread.
    @param recent: the L{RecentClaims} shared by all IMAP listeners.
    @param sessions: logged-in sessions per user, shared likewise.
    """

    protocol = IMAPServer
    noisy = False

    def __init__(self, settings: Settings, tls, portal, limiter: ConnectionLimiter, run, *,
                 implicit_tls: bool = False, recent=None, sessions=None):
        self.settings = settings
        self.tls = tls
        self.portal = portal
        self.limiter = limiter
        self.run = run
        self.implicit_tls = implicit_tls
        self.recent = recent if recent is not None else RecentClaims()
        self.sessions = sessions if sessions is not None else Counter()


class RecentClaims:
    """
    Which session saw a message first, for \\Recent (RFC 3501 2.3.2): the
    highest UID already shown as recent, per user and folder.  Kept in
    memory: after a restart every message is recent once more.
    """

    def __init__(self):
        self._claimed: dict[tuple[str, str, int], int] = {}

    def count(self, user: str, folder: str, uidvalidity: int, uids) -> int:
        """
        How many of C{uids} nobody has been shown yet (STATUS RECENT).
        """
        last = self._claimed.get((user, folder, uidvalidity), 0)
        return sum(1 for uid in uids if uid > last)

    def claim(self, user: str, folder: str, uidvalidity: int, uids, read_only: bool = False
              ) -> set[int]:
        """
        Claim the UIDs above the last claim; return them.  A C{read_only}
        session (EXAMINE) sees them as recent without taking that from the
        next session (RFC 3501 6.3.2).
        """
        key = (user, folder, uidvalidity)
        last = self._claimed.get(key, 0)
        recent = {uid for uid in uids if uid > last}
        if recent and not read_only:
            self._claimed[key] = max(recent)
        return recent
