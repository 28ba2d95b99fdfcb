"""
Tests for L{mailsrv.queue.routing}: smarthost, static routes, MX and
address lookups, answered by canned DNS records and never by real DNS.
"""

from random import Random

from twisted.internet import defer
from twisted.names import authority, common, dns
from twisted.names.error import DNSNameError, DNSQueryTimeoutError, DNSServerError
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.config import QueueSettings, RouteSettings, SmarthostSettings
from mailsrv.queue.routing import Destination, Router, RoutingError

SOA = (b"example", dns.Record_SOA(mname=b"ns.example", rname=b"root.example", serial=1,
                                  refresh=3600, retry=600, expire=86400, minimum=300))

RECORDS = {
    b"prefs.example": [dns.Record_MX(20, b"mx20.prefs.example"),
                       dns.Record_MX(5, b"mx5.prefs.example"),
                       dns.Record_MX(10, b"mx10.prefs.example")],
    b"equal.example": [dns.Record_MX(10, b"a.equal.example"),
                       dns.Record_MX(10, b"b.equal.example"),
                       dns.Record_MX(20, b"backup.equal.example")],
    b"dup.example": [dns.Record_MX(10, b"MX.Dup.Example."),
                     dns.Record_MX(20, b"mx.dup.example")],
    b"v4only.example": [dns.Record_A("192.0.2.1")],
    b"v6only.example": [dns.Record_AAAA("2001:db8::1")],
    b"alias.example": [dns.Record_CNAME(b"v4only.example")],
    b"txtonly.example": [dns.Record_TXT(b"v=spf1 -all")],
    b"nullmx.example": [dns.Record_MX(0, b"")],
    b"xn--bcher-kva.example": [dns.Record_MX(10, b"mx.xn--bcher-kva.example")],
    b"dual.example": [dns.Record_A("192.0.2.10"), dns.Record_AAAA("2001:db8::10"),
                      dns.Record_A("192.0.2.11")],
}


class FakeAuthority(authority.FileAuthority):
    """
    The canned records above, answered like an authoritative server for
    C{example}: NXDOMAIN for unknown names, an empty answer for missing types.
    """

    def __init__(self, records=RECORDS):
        common.ResolverBase.__init__(self)
        self.soa, self.records = SOA, records


class BrokenResolver(common.ResolverBase):
    """
    Fails queries for the C{broken} record types with C{error} and answers
    the others from L{FakeAuthority}.
    """

    def __init__(self, error, broken=(dns.MX, dns.A, dns.AAAA)):
        common.ResolverBase.__init__(self)
        self.error, self.broken = error, broken
        self.authority = FakeAuthority()

    def _lookup(self, name, cls, type, timeout):
        if type in self.broken:
            return defer.fail(self.error)
        return self.authority._lookup(name, cls, type, timeout)


class CannedResolver(common.ResolverBase):
    """
    Answers every query with the same answer section, as a recursive
    resolver does with a CNAME chain and the records at its end.
    """

    def __init__(self, answer):
        common.ResolverBase.__init__(self)
        self.answer = answer

    def _lookup(self, name, cls, type, timeout):
        return defer.succeed((self.answer, [], []))


def rr(name, payload):
    return dns.RRHeader(name, payload.TYPE, dns.IN, 300, payload)


class RouterTestsMixin:
    def router(self, settings=None, resolver=None, **kwargs):
        return Router(settings or QueueSettings(), resolver or FakeAuthority(), **kwargs)

    def destination(self, domain, **kwargs) -> Destination:
        return self.successResultOf(self.router(**kwargs).destination(domain))

    def routing_error(self, d) -> RoutingError:
        return self.failureResultOf(d, RoutingError).value


class MXTests(RouterTestsMixin, SynchronousTestCase):
    def test_preferenceOrder(self):
        """
        MX hosts are tried lowest preference first (RFC 5321 5.1), whatever
        the order of the answer.
        """
        self.assertEqual(self.destination("prefs.example"), Destination(
            "prefs.example", ("mx5.prefs.example", "mx10.prefs.example", "mx20.prefs.example"),
            25, "opportunistic"))

    def test_equalPreferenceShuffled(self):
        """
        Hosts of equal preference come in an order the injected random
        chooses, so that load spreads (RFC 5321 5.1), and never after a
        worse preference.
        """
        orders = set()
        for seed in range(20):
            hosts = self.destination("equal.example", random=Random(seed)).hosts
            self.assertEqual(hosts, self.destination("equal.example", random=Random(seed)).hosts)
            self.assertEqual(hosts[2], "backup.equal.example")
            orders.add(hosts[:2])
        self.assertEqual(orders, {("a.equal.example", "b.equal.example"),
                                  ("b.equal.example", "a.equal.example")})

    def test_duplicateHosts(self):
        """
        An exchange listed twice, in any case and with the root dot, is tried
        once, at its best preference.
        """
        self.assertEqual(self.destination("dup.example").hosts, ("mx.dup.example",))

    def test_implicitMX(self):
        """
        A domain without MX records but with an A or AAAA record is its own
        mail exchanger (RFC 5321 5.1).
        """
        for domain in ("v4only.example", "v6only.example", "alias.example"):
            self.assertEqual(self.destination(domain),
                             Destination(domain, (domain,), 25, "opportunistic"))

    def test_noMXNoAddress(self):
        """
        A domain with neither MX nor address records cannot receive mail:
        permanent 5.1.2.
        """
        error = self.routing_error(self.router().destination("txtonly.example"))
        self.assertEqual((error.permanent, error.status), (True, "5.1.2"))
        self.assertIn("txtonly.example", str(error))

    def test_nxdomain(self):
        """
        A domain that does not exist is a permanent 5.1.2 (RFC 5321 5.1: a
        non-existent domain MUST be reported as an error), from a local
        authority or a DNS server alike.
        """
        for resolver in (FakeAuthority(), BrokenResolver(DNSNameError())):
            error = self.routing_error(
                self.router(resolver=resolver).destination("missing.example"))
            self.assertEqual((error.permanent, error.status), (True, "5.1.2"))
            self.assertEqual(str(error), "domain missing.example not found")

    def test_nullMX(self):
        """
        A null MX says the domain accepts no mail: permanent 5.1.10 (RFC 7505
        section 4.1).
        """
        error = self.routing_error(self.router().destination("nullmx.example"))
        self.assertEqual((error.permanent, error.status), (True, "5.1.10"))
        self.assertIn("null MX, RFC 7505", error.text)

    def test_dnsFailureIsTemporary(self):
        """
        A DNS server failure or a timeout is a temporary 4.4.3 (RFC 5321 5.1:
        the message MUST be queued and retried).
        """
        for failure in (DNSServerError(), DNSQueryTimeoutError(1), OSError("no servers")):
            resolver = BrokenResolver(failure)
            error = self.routing_error(
                self.router(resolver=resolver).destination("prefs.example"))
            self.assertEqual((error.permanent, error.status), (False, "4.4.3"))

    def test_implicitMXLookupFailure(self):
        """
        When the address lookup behind an implicit MX fails, the domain is
        retried rather than bounced as addressless.
        """
        resolver = BrokenResolver(DNSServerError(), broken=(dns.A,))
        error = self.routing_error(self.router(resolver=resolver).destination("v4only.example"))
        self.assertEqual((error.permanent, error.status), (False, "4.4.3"))

    def test_cnameInAnswer(self):
        """
        MX records of the name a CNAME points to count (RFC 5321 5.1), those
        of unrelated names in the answer do not.
        """
        resolver = CannedResolver([
            rr(b"mx.example", dns.Record_MX(10, b"stray.example")),
            rr(b"target.example", dns.Record_MX(10, b"mx.target.example")),
            rr(b"Alias.Example", dns.Record_CNAME(b"target.example")),
        ])
        self.assertEqual(self.destination("alias.example", resolver=resolver).hosts,
                         ("mx.target.example",))

    def test_cnameLoop(self):
        """
        A CNAME loop in the answer ends the chain instead of looping forever.
        """
        resolver = CannedResolver([
            rr(b"a.example", dns.Record_CNAME(b"b.example")),
            rr(b"b.example", dns.Record_CNAME(b"a.example")),
            rr(b"b.example", dns.Record_MX(10, b"mx.b.example")),
        ])
        self.assertEqual(self.destination("a.example", resolver=resolver).hosts,
                         ("mx.b.example",))

    def test_internationalizedDomain(self):
        """
        A U-label domain is looked up and keyed by its lowercase A-label.
        """
        for domain in ("Bücher.Example", "xn--bcher-kva.example."):
            self.assertEqual(self.destination(domain), Destination(
                "xn--bcher-kva.example", ("mx.xn--bcher-kva.example",), 25, "opportunistic"))

    def test_invalidDomain(self):
        """
        A name that is not a domain is a permanent 5.1.2, before any DNS.
        """
        router = self.router(resolver=BrokenResolver(DNSServerError()))
        for domain in ("", "a..example", "-a.example", "a b.example", "xn--zz.example"):
            error = self.routing_error(router.destination(domain))
            self.assertEqual((error.permanent, error.status), (True, "5.1.2"), domain)

    def test_mxPortAndPolicy(self):
        """
        MX delivery uses the port the router was given and the queue's TLS
        policy.
        """
        destination = self.destination("prefs.example", mx_port=2525,
                                       settings=QueueSettings(tls="required"))
        self.assertEqual((destination.port, destination.tls), (2525, "required"))


class StaticTests(RouterTestsMixin, SynchronousTestCase):
    def test_smarthostTakesEverything(self):
        """
        With a smarthost set, every domain goes to it, without any DNS.
        """
        smarthost = SmarthostSettings(host="relay.example.net", username="u", password="p")
        settings = QueueSettings(smarthost=smarthost,
                                 routes={"prefs.example": RouteSettings(host="192.0.2.9")})
        router = self.router(settings, BrokenResolver(DNSServerError()))
        for domain in ("prefs.example", "missing.example"):
            self.assertEqual(self.successResultOf(router.destination(domain)), Destination(
                "smarthost", ("relay.example.net",), 587, "verify", False, "u", "p"))

    def test_staticRoute(self):
        """
        A static route replaces the MX lookup for its domain, whichever
        spelling of the domain the config or the recipient uses.
        """
        route = RouteSettings(host="192.0.2.9", port=2525, implicit_tls=True, tls="verify")
        settings = QueueSettings(routes={"Bücher.example": route, "xn--caf-dma.example": route})
        router = self.router(settings, BrokenResolver(DNSServerError()))
        for domain, key in [("xn--bcher-kva.example", "route:xn--bcher-kva.example"),
                            ("bücher.EXAMPLE", "route:xn--bcher-kva.example"),
                            ("café.example", "route:xn--caf-dma.example")]:
            self.assertEqual(self.successResultOf(router.destination(domain)),
                             Destination(key, ("192.0.2.9",), 2525, "verify", True), domain)
        # Other domains still go by DNS, which is broken here.
        self.assertEqual(self.routing_error(router.destination("prefs.example")).status, "4.4.3")


class AddressTests(RouterTestsMixin, SynchronousTestCase):
    def test_ipv6First(self):
        """
        IPv6 addresses come before IPv4 ones, each in the order of the answer.
        """
        self.assertEqual(self.successResultOf(self.router().addresses("dual.example")),
                         ["2001:db8::10", "192.0.2.10", "192.0.2.11"])

    def test_ipLiteral(self):
        """
        An IP address is its own address, without DNS.
        """
        router = self.router(resolver=BrokenResolver(DNSServerError()))
        for host in ("192.0.2.7", "2001:db8::7"):
            self.assertEqual(self.successResultOf(router.addresses(host)), [host])

    def test_cname(self):
        """
        A host that is a CNAME gets the addresses of the name it points to.
        """
        self.assertEqual(self.successResultOf(self.router().addresses("alias.example")),
                         ["192.0.2.1"])

    def test_noAddress(self):
        """
        A host without addresses, or that does not exist, is a temporary
        4.4.4: the domain's other hosts may still work.
        """
        for host in ("txtonly.example", "missing.example", "bad_name.example"):
            error = self.routing_error(self.router().addresses(host))
            self.assertEqual((error.permanent, error.status), (False, "4.4.4"), host)

    def test_oneQueryFails(self):
        """
        When one of the AAAA and A queries fails, the other one's addresses
        are used.
        """
        for broken, expected in [(dns.AAAA, ["192.0.2.10", "192.0.2.11"]),
                                 (dns.A, ["2001:db8::10"])]:
            router = self.router(resolver=BrokenResolver(DNSServerError(), broken=(broken,)))
            self.assertEqual(self.successResultOf(router.addresses("dual.example")), expected)

    def test_bothQueriesFail(self):
        """
        When both queries fail, the lookup is retried later: temporary 4.4.3.
        """
        router = self.router(resolver=BrokenResolver(DNSQueryTimeoutError(1)))
        error = self.routing_error(router.addresses("dual.example"))
        self.assertEqual((error.permanent, error.status), (False, "4.4.3"))
        self.assertEqual(str(error), "DNS lookup for dual.example failed (timed out)")
