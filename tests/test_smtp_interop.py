"""
Interop: third-party SMTP clients against the real server (swaks, msmtp,
curl, installed from Debian by .ci/run).
"""

from __future__ import annotations

import subprocess

from tests.clients import run
from tests.smtp_sink import SMTPSink
from tests.test_smtp_server import ALICE, BOB, PASSWORD, SMTPTestCase

BODY = "Subject: interop\r\n\r\nSent by a real client.\r\n"


class SwaksTests(SMTPTestCase):
    def swaks(self, role: str, *args: str) -> subprocess.CompletedProcess:
        return run(["swaks", "--server", "127.0.0.1", "--port", str(self.ports[role]),
                    "--helo", "client.example.net", "--body", "Sent by swaks.",
                    "--header", "Subject: swaks", *args])

    async def test_deliverOnMX(self):
        result = await self.in_thread(self.swaks, "smtp", "--from", "x@example.net",
                                      "--to", ALICE)
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        [stored] = self.inbox(ALICE)
        self.assertIn(b"Subject: swaks", stored)
        self.assertIn(b"Sent by swaks.", stored)

    async def test_submissionWithTLSAndAuth(self):
        for mechanism in ("PLAIN", "LOGIN"):
            result = await self.in_thread(
                self.swaks, "submission", "--tls", "--auth", mechanism,
                "--auth-user", ALICE, "--auth-password", PASSWORD,
                "--from", ALICE, "--to", BOB)
            self.assertEqual(result.returncode, 0, result.stdout.decode())
        self.assertEqual(len(self.inbox(BOB)), 2)

    async def test_submissionWithoutAuthRefused(self):
        result = await self.in_thread(self.swaks, "submission", "--tls", "--from", ALICE,
                                      "--to", BOB)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"530 5.7.0 Authentication required", result.stdout)
        self.assertEqual(self.inbox(BOB), [])

    async def test_noOpenRelay(self):
        result = await self.in_thread(self.swaks, "smtp", "--from", "x@example.net",
                                      "--to", "victim@elsewhere.example")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"554 5.7.1 Relay access denied", result.stdout)

    async def test_pipeline(self):
        result = await self.in_thread(self.swaks, "smtp", "--pipeline", "--from",
                                      "x@example.net", "--to", f"{ALICE},{BOB}")
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        self.assertIn(b"PIPELINING", result.stdout)
        self.assertEqual((len(self.inbox(ALICE)), len(self.inbox(BOB))), (1, 1))



class SwaksOutboundTests(SMTPTestCase):
    def setUp(self):
        self.sink = SMTPSink()
        self.addCleanup(self.sink.stop)
        self.config = (f'[queue.routes."elsewhere.example"]\nhost = "127.0.0.1"\n'
                       f'port = {self.sink.listen()}\ntls = "none"\n')
        super().setUp()

    async def test_submissionToOtherDomain(self):
        """
        swaks, logged in on submission, sends to another domain: the
        message is queued and relayed to that domain's server.
        """
        result = await self.in_thread(
            run, ["swaks", "--server", "127.0.0.1", "--port", str(self.ports["submission"]),
                  "--tls", "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password",
                  PASSWORD, "--from", ALICE, "--to", "someone@elsewhere.example",
                  "--header", "Subject: swaks out", "--body", "Relayed."])
        self.assertEqual(result.returncode, 0, result.stdout.decode())
        [relayed] = await self.sink.wait_for_messages(1)
        self.assertEqual((relayed.sender, relayed.recipients),
                         (ALICE, ["someone@elsewhere.example"]))
        self.assertIn(b"Subject: swaks out", relayed.data)
        self.assertIn(b"with ESMTPSA id", relayed.data)

class MsmtpTests(SMTPTestCase):
    async def test_implicitTLS(self):
        """
        msmtp sends through submissions (port 465 style, RFC 8314),
        checking the certificate against the test CA.
        """
        ca = self.client_tls_path
        result = await self.in_thread(
            run, ["msmtp", "--host=127.0.0.1", f"--port={self.ports['submissions']}",
                  "--tls=on", "--tls-starttls=off", f"--tls-trust-file={ca}",
                  "--tls-host-override=localhost", "--auth=plain", f"--user={ALICE}",
                  f"--passwordeval=echo {PASSWORD}", f"--from={ALICE}", BOB],
            BODY.encode())
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        [stored] = self.inbox(BOB)
        self.assertTrue(stored.endswith(BODY.encode()), stored)


class CurlTests(SMTPTestCase):
    async def test_starttlsRequired(self):
        result = await self.in_thread(
            run, ["curl", "--silent", "--show-error", "--ssl-reqd",
                  f"smtp://127.0.0.1:{self.ports['submission']}", "--cacert",
                  str(self.client_tls_path), "--user", f"{ALICE}:{PASSWORD}",
                  "--mail-from", ALICE, "--mail-rcpt", BOB, "--upload-file", "-"],
            BODY.encode())
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        [stored] = self.inbox(BOB)
        self.assertTrue(stored.endswith(BODY.encode()), stored)
