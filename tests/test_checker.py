"""
Tests for L{mailsrv.cred.checker} and the realm: logins through a real
portal, hashing in a real thread pool, throttling and file reloads.
"""

import os
import threading
from pathlib import Path

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailsrv.config import ThrottleSettings
from mailsrv.cred import checker as checker_module
from mailsrv.cred.checker import PasswdFileChecker
from mailsrv.cred.credentials import PeerUsernamePassword
from mailsrv.cred.passwd_file import set_password
from mailsrv.cred.passwords import hash_password
from mailsrv.cred.realm import IMailAccount, MailRealm
from mailsrv.cred.throttle import LoginThrottle
from mailsrv.store.maildir import MaildirStore
from mailsrv.store.testing import run_now
from mailsrv.threads import ThreadPoolService
from tests.test_passwords import cheap_hash

THROTTLE = ThrottleSettings(free_failures=1, base_delay=30.0, max_delay=60.0,
                            forget_after=600.0)


class CheckerTests(TestCase):
    def setUp(self):
        self.hashing = ThreadPoolService("test-hashing", 2, reactor)
        self.addCleanup(self.hashing.stopService)
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        set_password(self.path, "alice@example.org", cheap_hash("wonderland"), create=True)
        self.clock = Clock()
        self.checker = PasswdFileChecker(
            self.path, default_domain="example.org",
            throttle=LoginThrottle(THROTTLE, self.clock), run=self.hashing.run)
        self.store = MaildirStore(Path(self.mktemp()).absolute(), run_now)
        self.addCleanup(self.store.close)
        self.portal = Portal(MailRealm(self.store), [self.checker])

    def login(self, username, password, peer="192.0.2.1") -> Deferred:
        return self.checker.requestAvatarId(PeerUsernamePassword(username, password, peer))

    async def test_goodPassword(self):
        self.assertEqual(await self.login(b"alice@example.org", b"wonderland"),
                         "alice@example.org")

    async def test_nameWithoutDomainAndCase(self):
        """
        Login names are case-insensitive and get the default domain.
        """
        self.assertEqual(await self.login("ALICE", "wonderland"), "alice@example.org")

    async def test_wrongPassword(self):
        with self.assertRaises(UnauthorizedLogin):
            await self.login(b"alice@example.org", b"wonderlan")

    async def test_unknownUserCostsAVerification(self):
        """
        An unknown user fails like a wrong password, after a dummy check, so
        the answer's timing does not tell who exists.
        """
        calls = []
        self.patch(checker_module, "dummy_verify", lambda: calls.append(1) or False)
        with self.assertRaises(UnauthorizedLogin) as caught:
            await self.login(b"mallory@example.org", b"x")
        self.assertEqual(calls, [1])
        self.assertEqual(str(caught.exception), "bad credentials")

    async def test_undecodableCredentials(self):
        with self.assertRaises(UnauthorizedLogin):
            await self.login(b"\xffalice@example.org", b"wonderland")
        with self.assertRaises(UnauthorizedLogin):
            await self.login(b"alice:x@example.org", b"wonderland")

    async def test_throttledLoginFailsLikeAWrongPassword(self):
        """
        Once throttled, even the right password fails, with the same error as
        a wrong one and without a password check; after the delay it works.
        """
        for _ in range(2):
            with self.assertRaises(UnauthorizedLogin):
                await self.login(b"alice@example.org", b"guess")
        checked = []
        self.patch(checker_module, "verify_password", lambda *a: checked.append(a))
        with self.assertRaises(UnauthorizedLogin) as caught:
            await self.login(b"alice@example.org", b"wonderland")
        self.assertEqual(str(caught.exception), "bad credentials")
        self.assertEqual(checked, [])
        self.clock.advance(THROTTLE.base_delay)
        self.patch(checker_module, "verify_password", lambda *a: True)
        self.assertEqual(await self.login(b"alice@example.org", b"wonderland"),
                         "alice@example.org")

    async def test_throttledPerAddress(self):
        """
        Failures for unknown users from one address throttle that address
        for every account, existing or not, alike.
        """
        for name in (b"a@example.org", b"b@example.org"):
            with self.assertRaises(UnauthorizedLogin):
                await self.login(name, b"x", peer="198.51.100.9")
        self.patch(checker_module, "verify_password", lambda *a: self.fail("checked"))
        with self.assertRaises(UnauthorizedLogin):
            await self.login(b"alice@example.org", b"wonderland", peer="198.51.100.9")
        self.patch(checker_module, "verify_password", lambda *a: True)
        self.assertEqual(await self.login(b"alice@example.org", b"wonderland",
                                          peer="203.0.113.1"), "alice@example.org")

    async def test_plainUsernamePassword(self):
        """
        Twisted's own credentials work too (no address to throttle by).
        """
        avatar_id = await self.checker.requestAvatarId(
            UsernamePassword(b"alice@example.org", b"wonderland"))
        self.assertEqual(avatar_id, "alice@example.org")

    async def test_fileChangesArePickedUp(self):
        """
        A user added (or a password changed) after the file was loaded can
        log in at once: no restart, no signal.
        """
        await self.login(b"alice@example.org", b"wonderland")
        set_password(self.path, "bob@example.org", cheap_hash("builder"), create=True)
        self.assertEqual(await self.login(b"bob@example.org", b"builder"), "bob@example.org")
        set_password(self.path, "alice@example.org", cheap_hash("changed"), create=False)
        with self.assertRaises(UnauthorizedLogin):
            await self.login(b"alice@example.org", b"wonderland")

    async def test_fileRemoved(self):
        await self.login(b"alice@example.org", b"wonderland")
        os.remove(self.path)
        self.assertEqual(await self.checker.users(), {})

    async def test_verificationRunsOffTheReactorThread(self):
        """
        The hash check runs in the pool while the reactor keeps running: a
        timer scheduled after the check started fires before it ends.
        """
        stored = hash_password("wonderland", "bcrypt")
        set_password(self.path, "alice@example.org", stored, create=False)
        await self.checker.users()
        seen = []
        release = threading.Event()
        real_verify = checker_module.verify_password

        def verify(password, stored):
            seen.append((threading.get_ident(), isInIOThread()))
            release.wait(10)
            return real_verify(password, stored)

        self.patch(checker_module, "verify_password", verify)
        login = self.login(b"alice@example.org", b"wonderland")
        ticks = []
        await deferLater(reactor, 0.01, ticks.append, "reactor ran")
        self.assertEqual(ticks, ["reactor ran"])
        self.assertFalse(login.called)
        release.set()
        self.assertEqual(await login, "alice@example.org")
        [(thread, in_io_thread)] = seen
        self.assertNotEqual(thread, threading.get_ident())
        self.assertFalse(in_io_thread)

    async def test_portalLogin(self):
        """
        The realm gives the account avatar for a checked address, with that
        user's store.
        """
        interface, avatar, logout = await self.portal.login(
            PeerUsernamePassword(b"alice", b"wonderland", "192.0.2.1"), None, IMailAccount)
        self.assertIs(interface, IMailAccount)
        self.assertTrue(verifyObject(IMailAccount, avatar))
        self.assertEqual((avatar.address, avatar.local_part, avatar.domain),
                         ("alice@example.org", "alice", "example.org"))
        self.assertIs(avatar.store, self.store.user("alice@example.org"))
        logout()
