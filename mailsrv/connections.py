"""
What every server protocol does with a new connection: learn the client's
address, turn Nagle off, and count it against the limits shared by every
listener of one protocol (so many in all, so many from one client address,
IPv6 by /64).
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mailsrv.cred.throttle import peer_key


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_address: int):
        self._max_total = max_total
        self._max_per_address = max_per_address
        self._total = 0
        self._by_address: Counter[str] = Counter()

    def acquire(self, peer: str) -> bool:
        """
        Count a new connection from C{peer}; False (and nothing counted) if
        it would pass a limit.
        """
        key = peer_key(peer)
        if self._total >= self._max_total or self._by_address[key] >= self._max_per_address:
            return False
        self._total += 1
        self._by_address[key] += 1
        return True

    def release(self, peer: str) -> None:
        key = peer_key(peer)
        self._total -= 1
        self._by_address[key] -= 1
        if self._by_address[key] <= 0:
            del self._by_address[key]


def accept(transport) -> str:
    """
    Set TCP_NODELAY (Twisted leaves Nagle on, and a reply split in two
    writes then waits ~40 ms for the client's delayed ACK) and return the
    client's address.
    """
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError):
        pass
    peer = transport.getPeer()
    return getattr(peer, "host", str(peer))


@implementer(IPushProducer)
class BackPressure:
    """
    For a server protocol that registers itself as its transport's producer
    while it writes a long response (IMAP FETCH, POP3 RETR): L{writable}
    fires once the transport wants more, so a client that reads slowly
    slows the server down instead of filling its memory.  The protocol
    errbacks C{_paused} when its connection is lost.
    """

    _paused: Deferred | None = None

    def writable(self) -> Deferred:
        return self._paused if self._paused is not None else succeed(None)

    def pauseProducing(self):
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self):
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.callback(None)

    def stopProducing(self):
        pass


class CountedConnection(BackPressure):
    """
    For a server protocol (IMAP, POP3) whose factory has a C{limiter} and
    C{implicit_tls}: admit a connection against the limits, and at its end
    give its place back and fail what waited for it (the next line, the
    transport wanting more).
    """

    _counted = False
    _line_waiter: Deferred | None = None
    peer = "unknown"
    tls = False

    def admit(self) -> bool:
        """
        In connectionMade: whether the client may stay; if not, the caller
        says so and closes.
        """
        self.peer = accept(self.transport)
        self.tls = self.factory.implicit_tls
        self._counted = self.factory.limiter.acquire(self.peer)
        return self._counted

    def release(self, reason) -> None:
        """
        In connectionLost.
        """
        if self._counted:
            self._counted = False
            self.factory.limiter.release(self.peer)
        waiters, self._line_waiter, self._paused = (self._line_waiter, self._paused), None, None
        for waiter in waiters:
            if waiter is not None:
                waiter.errback(reason)
