"""
Where the outbound queue connects to deliver mail for a recipient domain.

The smarthost when one is set, else a static route for the domain, else the
domain's MX hosts (RFC 5321 5.1, RFC 7505), found with C{twisted.names} so
that DNS never blocks the reactor.  No cache here: the resolver has one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from random import Random

import idna
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IResolver
from twisted.names import dns
from twisted.names.client import getResolver
from twisted.names.error import AuthoritativeDomainError, DNSNameError, DomainError

from mailsrv.config import QueueSettings, RouteSettings

#: NXDOMAIN, from a DNS server or from a local authority.
_NO_SUCH_DOMAIN = (DNSNameError, AuthoritativeDomainError)

#: Failures of a lookup that say nothing about the domain: retry later.
_DNS_FAILURES = (DomainError, defer.TimeoutError, OSError)


@dataclass(frozen=True)
class Destination:
    """
    The next hop for a recipient domain and how to talk to it.

    Recipients whose destinations have the same C{key} share connections and
    one per-destination limit.
    """

    key: str
    hosts: tuple[str, ...]
    port: int
    tls: str
    implicit_tls: bool = False
    username: str = ""
    password: str = ""


class RoutingError(Exception):
    """
    No next hop for a domain, now (retry later) or ever (bounce).

    @ivar status: the RFC 3463 enhanced status code for the delivery report.
    """

    def __init__(self, permanent: bool, status: str, text: str):
        super().__init__(text)
        self.permanent = permanent
        self.status = status
        self.text = text


def _a_label(domain: str) -> str:
    """
    C{domain} as a lowercase A-label without the root dot, so that every
    spelling of a domain gives one key.

    @raise UnicodeError: if it is not a valid domain name.
    """
    return idna.encode(domain.removesuffix("."), uts46=True).decode("ascii")


def _static(key: str, route: RouteSettings) -> Destination:
    return Destination(key, (route.host,), route.port, route.tls, route.implicit_tls,
                       route.username, route.password)


def _owner(name: dns.Name) -> bytes:
    return name.name.rstrip(b".").lower()


def _records(answer: list[dns.RRHeader], name: str, record_type: int) -> list:
    """
    The payloads of C{record_type} in C{answer} owned by C{name} or by an
    alias that the answer's CNAME chain from C{name} leads to (RFC 5321 5.1:
    the alias is processed as if it were the initial name).
    """
    aliases = {_owner(r.name): _owner(r.payload.name) for r in answer if r.type == dns.CNAME}
    owners = [name.encode("ascii")]
    while aliases.get(owners[-1]) not in (None, *owners):
        owners.append(aliases[owners[-1]])
    return [r.payload for r in answer if r.type == record_type and _owner(r.name) in owners]


def _dns_failure(name: str, error: BaseException) -> RoutingError:
    reason = "timed out" if isinstance(error, defer.TimeoutError) else type(error).__name__
    # RFC 3463 X.4.3: directory server failure, a persistent transient error.
    return RoutingError(False, "4.4.3", f"DNS lookup for {name} failed ({reason})")


class Router:
    """
    The L{Destination} of recipient domains, from the queue settings and DNS.

    @param resolver: an L{IResolver}; by default the system's, from
        C{twisted.names.client.getResolver()} at the first lookup (creating
        it starts a timer that re-reads C{/etc/resolv.conf}).
    @param random: shuffles MX hosts of equal preference (tests pass a seeded one).
    """

    def __init__(self, settings: QueueSettings, resolver: IResolver | None = None, *,
                 mx_port: int = 25, random: Random | None = None):
        self._settings = settings
        self._routes = {_a_label(domain): route for domain, route in settings.routes.items()}
        self._given_resolver = resolver
        self._mx_port = mx_port
        self._random = random or Random()

    @property
    def _resolver(self) -> IResolver:
        return self._given_resolver or getResolver()

    def destination(self, domain: str) -> Deferred:
        """
        Where mail for C{domain} goes: fires with a L{Destination}, or fails
        with L{RoutingError}.
        """
        return Deferred.fromCoroutine(self._destination(domain))

    def addresses(self, host: str) -> Deferred:
        """
        The IP addresses to try for C{host}, IPv6 first: fires with a
        non-empty list, or fails with a temporary L{RoutingError}, since the
        other hosts of a domain may still work.
        """
        return Deferred.fromCoroutine(self._addresses(host))

    async def _destination(self, domain: str) -> Destination:
        try:
            name = _a_label(domain)
        except UnicodeError:
            raise RoutingError(True, "5.1.2", f"{domain!r} is not a valid domain name") from None
        smarthost = self._settings.smarthost
        if smarthost.host:
            return _static("smarthost", smarthost)
        if name in self._routes:
            return _static(f"route:{name}", self._routes[name])
        try:
            answer, _, _ = await self._resolver.lookupMailExchange(name)
        except _NO_SUCH_DOMAIN:
            raise RoutingError(True, "5.1.2", f"domain {name} not found") from None
        except _DNS_FAILURES as e:
            raise _dns_failure(name, e) from e
        records = _records(answer, name, dns.MX)
        if not records:
            # RFC 5321 5.1: no MX records, so the domain is its own implicit MX.
            if not await self._lookup_addresses(name):
                raise RoutingError(True, "5.1.2", f"domain {name} has no MX and no address")
            return Destination(name, (name,), self._mx_port, self._settings.tls)
        by_preference: dict[int, list[str]] = {}
        for record in records:
            exchange = _owner(record.name).decode("ascii", "replace")
            if exchange:
                by_preference.setdefault(record.preference, []).append(exchange)
        if not by_preference:
            # RFC 7505 section 3: an MX with the exchange "." means no mail at all;
            # section 4.1 gives the status code.
            raise RoutingError(True, "5.1.10",
                               f"{name} does not accept mail (null MX, RFC 7505)")
        hosts = []
        for preference in sorted(by_preference):
            # RFC 5321 5.1: lowest preference first, equal ones in random order.
            group = by_preference[preference]
            self._random.shuffle(group)
            hosts += group
        return Destination(name, tuple(dict.fromkeys(hosts)), self._mx_port, self._settings.tls)

    async def _addresses(self, host: str) -> list[str]:
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        try:
            name = _a_label(host)
        except UnicodeError:
            raise RoutingError(False, "4.4.4", f"{host!r} is not a valid host name") from None
        addresses = await self._lookup_addresses(name)
        if not addresses:
            raise RoutingError(False, "4.4.4", f"no address for host {name}")
        return addresses

    async def _lookup_addresses(self, name: str) -> list[str]:
        """
        The AAAA then A addresses of C{name}; empty if it has none or does
        not exist.

        @raise RoutingError: 4.4.3 if a query failed and the other found nothing.
        """
        outcomes = await DeferredList([self._resolver.lookupIPV6Address(name),
                                       self._resolver.lookupAddress(name)], consumeErrors=True)
        addresses = []
        failure = None
        for (ok, result), record_type in zip(outcomes, (dns.AAAA, dns.A), strict=True):
            if ok:
                addresses += [str(ipaddress.ip_address(record.address))
                              for record in _records(result[0], name, record_type)]
            elif not result.check(*_NO_SUCH_DOMAIN):
                failure = result
        if failure is not None and not addresses:
            failure.trap(*_DNS_FAILURES)  # anything else is a bug: let it through
            raise _dns_failure(name, failure.value)
        return addresses
