"""
End-to-end tests of outbound mail: a mailsrv that takes a message on
submission and sends it, through a static route on 127.0.0.1, to a second
server: another mailsrv, or the scriptable sink where the test needs
replies a real server will not give on request.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import signal
import smtplib
import socket
import ssl
from pathlib import Path

import dkim
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailsrv.config import load_settings
from mailsrv.cred.passwd_file import set_password
from mailsrv.queue.dkim import create_key
from mailsrv.service import make_service
from mailsrv.store.maildir import user_directory
from tests.server import ServerProcess, wait_for, write_test_config
from tests.smtp_sink import SMTPSink
from tests.test_passwords import cheap_hash

ALICE, BOB, PASSWORD = "alice@sender.test", "bob@remote.test", "alice's secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(n: int = 1) -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: test {n}\r\n"
            f"Message-ID: <{n}@sender.test>\r\n\r\nHello Bob, number {n}.\r\n").encode()


def inbox(settings, address: str) -> list[bytes]:
    home = user_directory(settings.store.path, address)
    return [path.read_bytes() for sub in ("new", "cur") if (home / sub).is_dir()
            for path in sorted((home / sub).iterdir())]


def queue_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "queue").glob("*") if p.suffix in (".eml", ".json")]


class OutboundTestCase(TestCase):
    def server(self, domain: str, user: str, extra: str = "", roles=("smtp",)):
        """
        An in-process mailsrv for C{domain} with one user.

        @return: its settings, its ports by role and its CA.
        """
        directory = Path(self.mktemp()).absolute()
        config, ca = write_test_config(directory, f'[domains."{domain}"]\n' + extra, roles)
        settings = load_settings(config, environ={})
        settings.data_dir.mkdir(parents=True)
        set_password(Path(settings.auth.passwd_file), user, cheap_hash(PASSWORD), create=True)
        service = make_service(settings, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        ports = {listener.role: listener.port.getHost().port
                 for listener in service.listeners()}
        return settings, ports, ca

    def sender_config(self, port: int, tls: str = "none", ca: Path | None = None) -> str:
        ca_line = f'ca_file = "{ca}"\n' if ca else ""
        return (f"\n[queue]\nretry_first = 0.5\nretry_max = 0.5\n{ca_line}"
                f'[queue.routes."remote.test"]\nhost = "127.0.0.1"\nport = {port}\n'
                f'tls = "{tls}"\n')

    def submit(self, port: int, ca: Path, recipients, data: bytes):
        """
        Send as alice on submission, with STARTTLS and AUTH (in a thread).
        """
        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.starttls(context=ssl.create_default_context(cafile=str(ca)))
                client.login(ALICE, PASSWORD)
                return client.sendmail(ALICE, recipients, data)

        return deferToThread(send)

    async def until(self, condition, timeout: float = 20.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {condition}")


class TwoMailsrvTests(OutboundTestCase):
    def setUp(self):
        self.receiver, receiver_ports, self.receiver_ca = self.server(
            "remote.test", BOB)
        self.receiver_port = receiver_ports["smtp"]

    def sender(self, extra: str = "", tls: str = "verify"):
        settings, ports, ca = self.server(
            "sender.test", ALICE, extra + self.sender_config(
                self.receiver_port, tls, self.receiver_ca), roles=("submission", "imaps"))
        self.sender_settings, self.sender_ca, self.sender_ports = settings, ca, ports
        return ports["submission"]

    def read_over_imap(self) -> list[bytes]:
        """
        Alice's INBOX at the sending server, read with imaplib (in a thread).
        """
        client = imaplib.IMAP4_SSL("127.0.0.1", self.sender_ports["imaps"], timeout=20,
                                   ssl_context=ssl.create_default_context(
                                       cafile=str(self.sender_ca)))
        try:
            client.login(ALICE, PASSWORD)
            count = int(client.select("INBOX")[1][0])
            return [client.fetch(str(n), "(BODY.PEEK[])")[1][0][1] for n in range(1, count + 1)]
        finally:
            client.logout()

    async def test_deliveredWithVerifiedStartTLS(self):
        """
        A submitted message reaches the other server's mailbox inside TLS
        (RFC 3207, certificate checked), once, and leaves the queue empty.
        """
        port = self.sender()
        refused = await self.submit(port, self.sender_ca, [BOB], message())
        self.assertEqual(refused, {})
        await self.until(lambda: inbox(self.receiver, BOB))
        stored = inbox(self.receiver, BOB)
        self.assertEqual(len(stored), 1)
        self.assertIn(b"Return-Path: <alice@sender.test>", stored[0])
        # The receiver's trace field: ESMTPS is SMTP inside TLS (RFC 3848).
        self.assertRegex(stored[0], rb"by localhost \(mailsrv\) with ESMTPS id")
        self.assertIn(b"Hello Bob, number 1.", stored[0])
        await self.until(lambda: not queue_files(self.sender_settings.data_dir))

    async def test_permanentFailureBouncesToSender(self):
        """
        A 550 from the far end produces one RFC 3464 bounce in the sender's
        own mailbox, with a message/delivery-status part naming the
        recipient and the reply, read over IMAP.
        """
        port = self.sender()
        await self.submit(port, self.sender_ca, ["nobody@remote.test"], message())
        await self.until(lambda: inbox(self.sender_settings, ALICE))
        await self.until(lambda: not queue_files(self.sender_settings.data_dir))
        bounces = await deferToThread(self.read_over_imap)
        self.assertEqual(len(bounces), 1)
        self.assertEqual(bounces, inbox(self.sender_settings, ALICE))
        self.assertTrue(bounces[0].startswith(b"Return-Path: <>\r\n"))
        report = email.message_from_bytes(bounces[0], policy=email.policy.default)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual(report["Auto-Submitted"], "auto-replied")
        parts = [part.get_content_type() for part in report.iter_parts()]
        self.assertEqual(parts, ["text/plain", "message/delivery-status",
                                 "text/rfc822-headers"])
        status = list(report.iter_parts())[1].as_bytes()
        self.assertIn(b"Final-Recipient: rfc822; nobody@remote.test", status)
        self.assertIn(b"Action: failed", status)
        self.assertIn(b"Status: 5.1.1", status)
        self.assertIn(b"Diagnostic-Code: smtp; 550 5.1.1", status)
        self.assertIn(b"Subject: test 1", list(report.iter_parts())[2].as_bytes())
        self.assertEqual(inbox(self.receiver, BOB), [])

    async def test_dkimSignatureVerifies(self):
        """
        RFC 6376: mail from a domain with a key is signed, and the signature
        verifies on the receiving side against the published record.
        """
        key_dir = Path(self.mktemp())
        key_dir.mkdir()
        record = create_key(key_dir / "sender.pem")
        port = self.sender(f'dkim_key = "{key_dir.absolute() / "sender.pem"}"\n'
                           'dkim_selector = "s1"\n')
        await self.submit(port, self.sender_ca, [BOB], message())
        await self.until(lambda: inbox(self.receiver, BOB))
        stored = inbox(self.receiver, BOB)[0]
        self.assertIn(b"DKIM-Signature:", stored)
        looked_up = []

        def dns(name, timeout=5):
            looked_up.append(name)
            return record.encode() if name == b"s1._domainkey.sender.test." else None

        self.assertTrue(dkim.verify(stored, dnsfunc=dns))
        self.assertEqual(looked_up, [b"s1._domainkey.sender.test."])
        self.assertFalse(dkim.verify(stored.replace(b"number 1", b"number 2"), dnsfunc=dns))


class ScriptedReceiverTests(OutboundTestCase):
    async def test_temporaryFailureThenSuccess(self):
        """
        A 451 to the first RCPT is retried after the back-off; the message
        arrives exactly once.
        """
        sink = SMTPSink()
        self.addCleanup(sink.stop)
        sink.rcpt_reply = lambda address, attempt: (
            (451, "4.2.1 greylisted, come back later") if attempt == 1 else (250, "2.1.5 OK"))
        settings, ports, ca = self.server("sender.test", ALICE,
                                          self.sender_config(sink.listen()),
                                          roles=("submission",))
        await self.submit(ports["submission"], ca, [BOB], message())
        await sink.wait_for_messages(1)
        await self.until(lambda: not queue_files(settings.data_dir))
        self.assertEqual(len(sink.received), 1)
        self.assertEqual(sink.rcpt_attempts[BOB], 2)
        self.assertIn(b"Subject: test 1", sink.received[0].data)

    async def test_receiverDownThenUp(self):
        """
        Nothing listens at first: the message waits, and is delivered once
        the receiver is up.
        """
        port = free_port()
        settings, ports, ca = self.server("sender.test", ALICE, self.sender_config(port),
                                          roles=("submission",))
        await self.submit(ports["submission"], ca, [BOB], message())
        await deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(len(queue_files(settings.data_dir)), 2)
        sink = SMTPSink()
        sink.listen(port)
        self.addCleanup(sink.stop)
        await sink.wait_for_messages(1)
        await self.until(lambda: not queue_files(settings.data_dir))
        self.assertEqual(len(sink.received), 1)


class CrashTests(OutboundTestCase):
    async def test_sigkillLosesNothingAndSendsNothingTwice(self):
        """
        Messages accepted (250) while the receiver is down survive SIGKILL
        of the sending server: after a restart each is delivered once.  A
        second SIGKILL after they were delivered sends nothing again.
        """
        port = free_port()
        sender = ServerProcess.start(
            self, self.sender_config(port) + '[domains."sender.test"]\n',
            roles=("submission",))
        set_password(Path(sender.data_dir) / "users", ALICE, cheap_hash(PASSWORD),
                     create=True)
        for n in range(5):
            await self.submit(sender.ports["submission"], sender.ca_path, [BOB], message(n))
        self.assertEqual(len(queue_files(sender.data_dir)), 10)
        sender.signal(signal.SIGKILL)
        sender.process.wait()
        sink = SMTPSink()
        sink.listen(port)
        self.addCleanup(sink.stop)
        await deferToThread(sender.run, ("submission",))
        received = await sink.wait_for_messages(5)
        subjects = sorted(m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in received)
        self.assertEqual(subjects, [f"test {n}".encode() for n in range(5)])
        await deferToThread(wait_for, lambda: not queue_files(sender.data_dir))
        sender.signal(signal.SIGKILL)
        sender.process.wait()
        await deferToThread(sender.run, ("submission",))
        await deferLater(reactor, 2.0, lambda: None)
        self.assertEqual(len(sink.received), 5)
