"""
Tests for the C{mailsrv} admin command.
"""

import io
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.cli import main
from mailsrv.cred.passwd_file import read_passwd
from mailsrv.cred.passwords import verify_password
from tests.sourcetree import SOURCE_ROOT, server_environment


class CLITests(SynchronousTestCase):
    def setUp(self):
        self.data = Path(self.mktemp()).absolute()
        self.patch(sys, "stderr", io.StringIO())

    def run_cli(self, *argv, stdin="") -> tuple[int, str]:
        out = io.StringIO()
        status = main(["--data", str(self.data), *argv], stdin=io.StringIO(stdin), stdout=out)
        return status, out.getvalue()

    def errors(self) -> str:
        return sys.stderr.getvalue()

    def test_userAdd(self):
        """
        The password is the first line of a non-terminal stdin; the stored
        hash is argon2 (the default scheme) and verifies.
        """
        self.assertEqual(self.run_cli("user", "add", "Alice@localhost", stdin="s3cret\nrest\n"),
                         (0, "Added alice@localhost.\n"))
        stored = read_passwd(self.data / "users").users["alice@localhost"].password
        self.assertTrue(stored.startswith("{ARGON2ID}"))
        self.assertTrue(verify_password("s3cret", stored))

    def test_userAddTwice(self):
        self.run_cli("user", "add", "alice@localhost", stdin="a\n")
        self.assertEqual(self.run_cli("user", "add", "alice@localhost", stdin="b\n"), (1, ""))
        self.assertEqual(self.errors(), "mailsrv: alice@localhost already exists\n")

    def test_unknownDomain(self):
        self.assertEqual(self.run_cli("user", "add", "bob@example.com", stdin="b\n")[0], 1)
        self.assertIn("example.com is not a local domain", self.errors())

    def test_emptyPassword(self):
        self.assertEqual(self.run_cli("user", "add", "bob@localhost", stdin="\n")[0], 1)
        self.assertEqual(self.errors(), "mailsrv: empty password\n")

    def test_passwdDelList(self):
        self.run_cli("user", "add", "bob", stdin="one\n")
        self.run_cli("user", "add", "alice", stdin="two\n")
        self.assertEqual(self.run_cli("user", "list"), (0, "alice@localhost\nbob@localhost\n"))
        self.assertEqual(self.run_cli("user", "passwd", "bob", stdin="three\n")[0], 0)
        stored = read_passwd(self.data / "users").users["bob@localhost"].password
        self.assertTrue(verify_password("three", stored))
        self.assertEqual(self.run_cli("user", "del", "bob")[0], 0)
        self.assertEqual(self.run_cli("user", "list"), (0, "alice@localhost\n"))
        self.assertEqual(self.run_cli("user", "del", "bob")[0], 1)
        self.assertEqual(self.run_cli("user", "passwd", "carol", stdin="x\n")[0], 1)

    def test_bcryptScheme(self):
        config = self.data.parent / "bcrypt.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text('[auth]\nhash_scheme = "bcrypt"\n')
        self.assertEqual(self.run_cli("--config", str(config), "user", "add", "a@localhost",
                                      stdin="pw\n")[0], 0)
        stored = read_passwd(self.data / "users").users["a@localhost"].password
        self.assertTrue(stored.startswith("{BLF-CRYPT}$2b$"))

    def test_configCheck(self):
        good = self.data.parent / "good.toml"
        good.parent.mkdir(parents=True, exist_ok=True)
        good.write_text('[limits]\nmax_recipients = 10\n')
        self.assertEqual(self.run_cli("config", "check", str(good)), (0, f"{good}: OK\n"))
        bad = self.data.parent / "bad.toml"
        bad.write_text('[limits]\nmax_recipient = 10\n')
        self.assertEqual(self.run_cli("config", "check", str(bad)), (1, ""))
        self.assertTrue(self.errors().startswith(f"mailsrv: {bad}: limits.max_recipient: "))
        self.assertEqual(self.errors().count("\n"), 1)

    def test_configCheckBuiltIn(self):
        self.assertEqual(self.run_cli("config", "check"), (0, "built-in configuration: OK\n"))

    def test_certCreate(self):
        status, out = self.run_cli("cert", "create", "mail.example.org")
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith(f"Wrote {self.data}/tls/cert.pem"), out)
        cert = x509.load_pem_x509_certificate((self.data / "tls" / "cert.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("mail.example.org", names.get_values_for_type(x509.DNSName))
        self.assertEqual(self.run_cli("cert", "create", "mail.example.org")[0], 1)
        self.assertIn("already exists; use --force", self.errors())
        self.assertEqual(self.run_cli("cert", "create", "--force", "mx.example.org")[0], 0)


class ConsoleScriptTests(SynchronousTestCase):
    def test_passwordFromPipe(self):
        """
        Run as a program, with the password piped in, never in argv.
        """
        data = Path(self.mktemp()).absolute()
        result = subprocess.run(
            [sys.executable, "-m", "mailsrv.cli", "--data", str(data), "user", "add",
             "alice@localhost"], input=b"pipe-secret\n", capture_output=True,
            env=server_environment(), cwd=SOURCE_ROOT, timeout=60)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        stored = read_passwd(data / "users").users["alice@localhost"].password
        self.assertTrue(verify_password("pipe-secret", stored))

    def test_usageError(self):
        result = subprocess.run([sys.executable, "-m", "mailsrv.cli", "user", "frobnicate"],
                                capture_output=True, env=server_environment(), timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"invalid choice: 'frobnicate'", result.stderr)
