"""
Throttling of failed logins per client address and per account.

After C{free_failures} failures a key (an address or an account) is blocked
for C{base_delay} seconds, doubling with every further failure up to
C{max_delay}.  While blocked, every login for that key fails exactly as a
wrong password does, without a password check, so an attacker learns
nothing and spends nothing of ours.  Failures are forgotten C{forget_after}
seconds after the last one, and an account's on a successful login.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from mailsrv.config import ThrottleSettings

#: Entries kept at most; beyond it the stalest are dropped.
MAX_ENTRIES = 100_000


def peer_key(host: str) -> str:
    """
    The throttling key of a client address: IPv6 clients are grouped by
    their /64, since one host usually owns a whole /64.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


class LoginThrottle:
    """
    Failure counts and block times, keyed by strings such as
    C{"peer:192.0.2.1"} and C{"user:alice@example.org"}.
    """

    def __init__(self, settings: ThrottleSettings, clock: IReactorTime):
        self._settings = settings
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def _current(self, key: str) -> _Record | None:
        record = self._records.get(key)
        now = self._clock.seconds()
        if record is not None and now - record.last_failure >= self._settings.forget_after:
            del self._records[key]
            return None
        return record

    def blocked_for(self, keys) -> float:
        """
        Seconds until a login with these keys may be checked again (0: now).
        """
        now = self._clock.seconds()
        remaining = 0.0
        for key in keys:
            record = self._current(key)
            if record is not None:
                remaining = max(remaining, record.blocked_until - now)
        return remaining

    def failed(self, keys) -> None:
        """
        Count a failed login against each key.
        """
        now = self._clock.seconds()
        settings = self._settings
        for key in keys:
            record = self._current(key) or _Record(0, now, now)
            record.failures += 1
            record.last_failure = now
            excess = record.failures - settings.free_failures
            if excess > 0:
                delay = min(settings.max_delay, settings.base_delay * 2 ** min(excess - 1, 64))
                record.blocked_until = now + delay
            self._records[key] = record
        if len(self._records) > MAX_ENTRIES:
            self._prune()

    def succeeded(self, account_key: str) -> None:
        """
        Forget an account's failures after its owner logged in.
        """
        self._records.pop(account_key, None)

    def _prune(self) -> None:
        for key in list(self._records):
            self._current(key)
        if len(self._records) > MAX_ENTRIES:
            stalest = sorted(self._records, key=lambda k: self._records[k].last_failure)
            for key in stalest[: len(stalest) - MAX_ENTRIES // 2]:
                del self._records[key]
