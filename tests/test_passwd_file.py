"""
Tests for L{mailsrv.cred.passwd_file}: Dovecot's passwd-file, read and edited.
"""

import os
import stat
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from mailsrv.cred.passwd_file import (
    BadAddress,
    PasswdError,
    canonical_user,
    delete_user,
    parse_passwd,
    read_passwd,
    set_password,
)
from mailsrv.cred.passwords import verify_password
from tests.test_passwords import SHA512_VECTOR, cheap_hash

HASH = "{SHA512-CRYPT}" + SHA512_VECTOR


class CanonicalUserTests(SynchronousTestCase):
    def test_lowerCasedAndCompleted(self):
        self.assertEqual(canonical_user(" Alice@Example.ORG ", "x.org"), "alice@example.org")
        self.assertEqual(canonical_user("bob", "Example.org"), "bob@example.org")

    def test_refused(self):
        for name in ("", "@example.org", "alice@", "a:b@example.org", "a b@example.org",
                     "a\0b@example.org", "a\nb@example.org", "#a@example.org", "bob"):
            with self.assertRaises(BadAddress, msg=repr(name)):
                canonical_user(name, "")


class ParseTests(SynchronousTestCase):
    def test_dovecotLines(self):
        """
        Comments and blank lines are skipped; extra Dovecot fields are kept.
        """
        parsed = parse_passwd(f"# users\n\nalice@example.org:{HASH}\n"
                              f"Bob@Example.org:{HASH}:1000:1000::/home/bob::userdb_quota=1G\n")
        self.assertEqual(parsed.problems, ())
        self.assertEqual(set(parsed.users), {"alice@example.org", "bob@example.org"})
        self.assertEqual(parsed.users["bob@example.org"].extra,
                         ("1000", "1000", "", "/home/bob", "", "userdb_quota=1G"))

    def test_badLinesReportedOthersKept(self):
        parsed = parse_passwd(f"alice@example.org:{{PLAIN}}secret\n"
                              f"bob@example.org:{HASH}\n"
                              f"no-domain:{HASH}\n"
                              f"BOB@example.org:{HASH}\n", "users")
        self.assertEqual(list(parsed.users), ["bob@example.org"])
        self.assertEqual(len(parsed.problems), 3)
        self.assertTrue(parsed.problems[0].startswith("users:1: password scheme {PLAIN}"))
        self.assertTrue(parsed.problems[1].startswith("users:3: not a valid user name"))
        self.assertIn("users:4: bob@example.org is listed again", parsed.problems[2])

    def test_missingFileHasNoUsers(self):
        parsed = read_passwd(Path(self.mktemp()))
        self.assertEqual((parsed.users, parsed.problems), ({}, ()))


class SampleFileTests(SynchronousTestCase):
    def test_usersExample(self):
        """
        etc/users.example is a valid file whose user has the password it
        documents.
        """
        sample = Path(__file__).resolve().parent.parent / "etc" / "users.example"
        parsed = read_passwd(sample)
        self.assertEqual(parsed.problems, ())
        self.assertTrue(verify_password("Hello world!",
                                        parsed.users["hello@localhost"].password))


class EditTests(SynchronousTestCase):
    def setUp(self):
        self.path = Path(self.mktemp())
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def test_addCreatesPrivateFile(self):
        set_password(self.path, "alice@example.org", cheap_hash("a"), create=True)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        self.assertEqual(list(read_passwd(self.path).users), ["alice@example.org"])

    def test_ownerKeptWhenRootEdits(self):
        """
        Run as root (sudo mailsrv user add), a new file belongs to the owner
        of its folder and an existing one keeps its owner, so the server,
        running as that user, can still read it.
        """
        if os.geteuid() != 0:
            raise SkipTest("only root can give files away")
        os.chown(self.path.parent, 65534, 65534)
        set_password(self.path, "alice@example.org", cheap_hash("a"), create=True)
        self.assertEqual((self.path.stat().st_uid, self.path.stat().st_gid), (65534, 65534))
        os.chown(self.path, 65534, 0)
        set_password(self.path, "alice@example.org", cheap_hash("b"), create=False)
        self.assertEqual((self.path.stat().st_uid, self.path.stat().st_gid), (65534, 0))

    def test_addExistingRefused(self):
        set_password(self.path, "alice@example.org", cheap_hash("a"), create=True)
        with self.assertRaises(PasswdError):
            set_password(self.path, "alice@example.org", cheap_hash("b"), create=True)

    def test_changeKeepsEverythingElse(self):
        """
        Changing a password rewrites only that user's password field.
        """
        self.path.write_text(f"# keep me\nalice@example.org:{HASH}:1000:1000::/home/a\n"
                             f"bob@example.org:{HASH}\n")
        new = cheap_hash("new")
        set_password(self.path, "alice@example.org", new, create=False)
        self.assertEqual(self.path.read_text(),
                         f"# keep me\nalice@example.org:{new}:1000:1000::/home/a\n"
                         f"bob@example.org:{HASH}\n")

    def test_changeMissingRefused(self):
        with self.assertRaises(PasswdError):
            set_password(self.path, "alice@example.org", cheap_hash("a"), create=False)

    def test_delete(self):
        self.path.write_text(f"# c\nalice@example.org:{HASH}\nbob@example.org:{HASH}\n")
        delete_user(self.path, "alice@example.org")
        self.assertEqual(self.path.read_text(), f"# c\nbob@example.org:{HASH}\n")
        with self.assertRaises(PasswdError):
            delete_user(self.path, "alice@example.org")
