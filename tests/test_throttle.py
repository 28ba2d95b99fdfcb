"""
Tests for L{mailsrv.cred.throttle}: growing delays per address and account.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.config import ThrottleSettings
from mailsrv.connections import ConnectionLimiter
from mailsrv.cred import throttle as throttle_module
from mailsrv.cred.throttle import LoginThrottle, peer_key

SETTINGS = ThrottleSettings(free_failures=2, base_delay=1.0, max_delay=8.0, forget_after=100.0)
KEYS = ["user:alice@example.org", "peer:192.0.2.1"]


class ThrottleTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.throttle = LoginThrottle(SETTINGS, self.clock)

    def test_freeFailures(self):
        self.throttle.failed(KEYS)
        self.throttle.failed(KEYS)
        self.assertEqual(self.throttle.blocked_for(KEYS), 0)

    def test_delaysDoubleUpToTheCap(self):
        """
        Each failure past the free ones blocks for twice as long, up to max_delay.
        """
        for _ in range(2):
            self.throttle.failed(KEYS)
        delays = []
        for _ in range(6):
            self.throttle.failed(KEYS)
            delays.append(self.throttle.blocked_for(KEYS))
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.clock.advance(8.0)
        self.assertEqual(self.throttle.blocked_for(KEYS), 0)

    def test_anyKeyBlocks(self):
        """
        A blocked address blocks every account tried from it, and a blocked
        account blocks it from every address.
        """
        for _ in range(3):
            self.throttle.failed(KEYS)
        self.assertEqual(self.throttle.blocked_for(["user:bob@example.org", KEYS[1]]), 1.0)
        self.assertEqual(self.throttle.blocked_for([KEYS[0], "peer:198.51.100.7"]), 1.0)
        self.assertEqual(self.throttle.blocked_for(["user:bob@example.org"]), 0)

    def test_forgottenAfterQuiet(self):
        for _ in range(5):
            self.throttle.failed(KEYS)
        self.clock.advance(100.0)
        self.throttle.failed(KEYS)
        self.assertEqual(self.throttle.blocked_for(KEYS), 0)

    def test_successForgetsTheAccountOnly(self):
        for _ in range(3):
            self.throttle.failed(KEYS)
        self.throttle.succeeded(KEYS[0])
        self.assertEqual(self.throttle.blocked_for(KEYS[:1]), 0)
        self.assertEqual(self.throttle.blocked_for(KEYS[1:]), 1.0)

    def test_memoryBounded(self):
        """
        An attacker cycling through addresses cannot grow the table without
        bound.
        """
        self.patch(throttle_module, "MAX_ENTRIES", 10)
        for n in range(25):
            self.throttle.failed([f"peer:10.0.0.{n}"])
            self.clock.advance(1)
        self.assertLessEqual(len(self.throttle._records), 10)
        self.assertEqual(self.throttle.blocked_for(["peer:10.0.0.24"]), 0)


class ConnectionLimiterTests(SynchronousTestCase):
    def test_totalAndPerAddress(self):
        limiter = ConnectionLimiter(max_total=3, max_per_address=2)
        self.assertEqual([limiter.acquire("192.0.2.1") for _ in range(3)], [True, True, False])
        self.assertTrue(limiter.acquire("2001:db8::1"))
        self.assertFalse(limiter.acquire("198.51.100.1"))
        limiter.release("192.0.2.1")
        self.assertTrue(limiter.acquire("198.51.100.1"))
        self.assertFalse(limiter.acquire("2001:db8::2"), "same /64, and the server is full")


class PeerKeyTests(SynchronousTestCase):
    def test_keys(self):
        self.assertEqual(peer_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(peer_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(peer_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(peer_key("2001:db8:1:2::ff"), "2001:db8:1:2::/64")
        self.assertEqual(peer_key("/run/sock"), "/run/sock")
