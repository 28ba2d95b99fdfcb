"""
Tests for the C{mailsrv} admin command.
"""

import io
import re
import stat
import subprocess
import sys
from pathlib import Path

import dkim
from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from mailsrv import cli
from mailsrv.cli import main
from mailsrv.config import load_settings
from mailsrv.cred.passwd_file import read_passwd
from mailsrv.cred.passwords import verify_password
from mailsrv.queue.dkim import DKIMSigner
from mailsrv.queue.spool import DELIVERED, Envelope, QueuedRecipient, Spool
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


    def write_config(self, name: str, text: str) -> Path:
        config = self.data.parent / name
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        return config

    def test_dkimCreate(self):
        """
        C{dkim create} writes a key that signs, once configured with the
        lines it prints, verifiably against the TXT record it prints.
        """
        config = self.write_config("dkim.toml", '[domains."example.org"]\n')
        status, out = self.run_cli("--config", str(config), "dkim", "create", "Example.ORG",
                                   "--selector", "s1", "--bits", "1024")
        self.assertEqual(status, 0, self.errors())
        key = self.data / "dkim" / "example.org.s1.pem"
        self.assertIn(f"Wrote a 1024-bit DKIM key to {key}.", out)
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(key.parent.stat().st_mode), 0o700)
        record = re.search(r'^s1\._domainkey\.example\.org\. IN TXT \((.*)\)$', out, re.M)
        self.assertIsNotNone(record, out)
        value = "".join(re.findall(r'"([^"]*)"', record.group(1))).encode()
        lines = 'dkim_key = "dkim/example.org.s1.pem"\ndkim_selector = "s1"\n'
        self.assertIn(f'add to [domains."example.org"] in {config}:\n\n{lines}', out)

        configured = self.write_config("signing.toml", '[domains."example.org"]\n' + lines)
        settings = load_settings(configured, self.data)
        message = b"From: alice@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
        signed = DKIMSigner(settings.domains).signature(message, "alice@example.org") + message
        records = {b"s1._domainkey.example.org.": value}
        self.assertTrue(dkim.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name)))

    def test_dkimCreateUnknownDomain(self):
        """
        A domain that is not local is refused, and names where to add it.
        """
        self.assertEqual(self.run_cli("dkim", "create", "example.com"), (1, ""))
        self.assertEqual(self.errors(), "mailsrv: example.com is not a local domain; add "
                         '[domains."example.com"] to the configuration\n')
        self.assertFalse((self.data / "dkim").exists())

    def test_dkimCreateExisting(self):
        """
        An existing key is kept unless C{--force} is given, which replaces it.
        """
        self.assertEqual(self.run_cli("dkim", "create", "localhost", "--bits", "1024")[0], 0)
        key = self.data / "dkim" / "localhost.mailsrv.pem"
        before = key.read_bytes()
        self.assertEqual(self.run_cli("dkim", "create", "localhost", "--bits", "1024"), (1, ""))
        self.assertEqual(self.errors(), f"mailsrv: {key} already exists; use --force to "
                         "replace it\n")
        self.assertEqual(key.read_bytes(), before)
        status, out = self.run_cli("dkim", "create", "localhost", "--bits", "1024", "--force")
        self.assertEqual(status, 0)
        self.assertNotEqual(key.read_bytes(), before)
        self.assertIn(f"Wrote a 1024-bit DKIM key to {key}.", out)

    def test_dkimCreateBadArguments(self):
        """
        A selector that is not a DNS name (RFC 6376 section 3.1) or a key
        size outside 1024..4096 bits (section 3.3.3) is refused.
        """
        self.assertEqual(self.run_cli("dkim", "create", "localhost", "--selector", "a/b"),
                         (1, ""))
        self.assertIn("--selector 'a/b': expected a selector", self.errors())
        self.assertEqual(self.run_cli("dkim", "create", "localhost", "--bits", "512"), (1, ""))
        self.assertIn("1024 to 4096 bits, not 512", self.errors())
        self.assertEqual(list((self.data / "dkim").glob("*")), [])

class QueueCommandTests(SynchronousTestCase):
    """
    C{mailsrv queue}: reading the queue, and asking for a retry or a
    deletion either of the running server or, without one, directly.
    """

    def setUp(self):
        self.data = Path(self.mktemp()).absolute()
        self.patch(sys, "stderr", io.StringIO())
        self.spool = Spool(self.data / "queue")
        self.spool.prepare()
        self.envelope = Envelope("ABC123", "alice@localhost", 1_700_000_000.0, 42, [
            QueuedRecipient("bob@remote.test", attempts=2, next_attempt=1_900_000_000.0,
                            reply="451 4.2.1 greylisted", status="4.2.1",
                            remote_mta="mx.remote.test[192.0.2.1]:25"),
            QueuedRecipient("carol@remote.test", state=DELIVERED, attempts=1)])
        self.spool.add(self.envelope, b"Subject: hi\r\nFrom: alice@localhost\r\n\r\nbody\r\n")

    def run_cli(self, *argv) -> tuple[int, str]:
        out = io.StringIO()
        status = main(["--data", str(self.data), *argv], stdin=io.StringIO(), stdout=out)
        return status, out.getvalue()

    def test_list(self):
        """
        One line per message and one per recipient still waiting, with its
        last reply.
        """
        status, out = self.run_cli("queue", "list")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^ABC123 +42  \d{4}-\d\d-\d\d \S+  <alice@localhost>$")
        self.assertIn("bob@remote.test  (tries 2, next ", lines[1])
        self.assertTrue(lines[1].endswith(": 451 4.2.1 greylisted"))
        self.assertEqual(lines[2], "1 messages, 1 recipients waiting.")

    def test_show(self):
        """
        Every recipient's state and the message's header section.
        """
        status, out = self.run_cli("queue", "show", "ABC123")
        self.assertEqual(status, 0)
        self.assertIn("Recipient: carol@remote.test\n    state delivered, tries 1", out)
        self.assertIn("4.2.1 mx.remote.test[192.0.2.1]:25: 451 4.2.1 greylisted", out)
        self.assertIn("Subject: hi\nFrom: alice@localhost", out)
        self.assertNotIn("body", out)

    def test_unknownOrBadID(self):
        """
        An ID that is not queued, or not an ID at all (a path), is refused.
        """
        self.assertEqual(self.run_cli("queue", "show", "NOPE")[0], 1)
        self.assertIn("no message NOPE in the queue", sys.stderr.getvalue())
        self.assertEqual(self.run_cli("queue", "delete", "../users")[0], 1)
        self.assertIn("is not a queue ID", sys.stderr.getvalue())

    def test_withoutServer(self):
        """
        With no server holding the queue, retry reschedules for now and
        delete removes both files at once.
        """
        self.assertEqual(self.run_cli("queue", "retry")[0], 0)
        self.assertEqual(self.spool.read("ABC123").recipients[0].next_attempt, 0.0)
        self.assertEqual(self.run_cli("queue", "delete", "ABC123")[0], 0)
        self.assertEqual(sorted(p.name for p in self.spool.path.glob("ABC123*")), [])

    def test_withServer(self):
        """
        While a server holds the queue, the command leaves a request in
        requests/ for it and does not touch the files itself.
        """
        self.patch(cli, "REQUEST_WAIT", 0.2)
        server = Spool(self.spool.path)
        self.assertTrue(server.lock())
        self.addCleanup(server.unlock)
        status, out = self.run_cli("queue", "retry", "ABC123")
        self.assertEqual(status, 0)
        self.assertIn("has not taken the request yet", out)
        self.run_cli("queue", "delete", "ABC123")
        self.assertEqual(sorted(p.name for p in self.spool.requests.iterdir()),
                         ["delete-ABC123", "retry-ABC123"])
        self.assertTrue(self.spool.envelope_path("ABC123").exists())


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
