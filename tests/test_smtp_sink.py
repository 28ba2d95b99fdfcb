"""
Tests for L{tests.smtp_sink}, the scripted receiving server of the outbound
queue's end-to-end tests, driven by smtplib and a raw socket in threads so
that the reactor keeps serving the sink.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.smtp_sink import SMTPSink, sink_tls

BODY = b"Subject: test\r\n\r\nfirst\r\n.\r\n..two dots\r\nlast\r\n"


class SMTPSinkTests(TestCase):
    def start(self, **kwargs) -> tuple[SMTPSink, int]:
        sink = SMTPSink(**kwargs)
        port = sink.listen()
        self.addCleanup(sink.stop)
        return sink, port

    def tls_sink(self) -> tuple[SMTPSink, int, ssl.SSLContext]:
        context, ca_path = sink_tls(Path(self.mktemp()))
        sink, port = self.start(tls=context, auth={"alice": "secret"})
        return sink, port, ssl.create_default_context(cafile=str(ca_path))

    async def test_plainMessage(self):
        """
        A message arrives dot-unstuffed with its envelope and MAIL parameters.
        """
        sink, port = self.start()

        def send():
            with smtplib.SMTP("127.0.0.1", port, "client.example", timeout=10) as client:
                client.sendmail("a@example.org", ["b@example.net"], BODY)

        await deferToThread(send)
        [message] = await sink.wait_for_messages(1)
        self.assertEqual(message.data, BODY)
        self.assertEqual((message.sender, message.recipients, message.helo, message.tls),
                         ("a@example.org", ["b@example.net"], "client.example", False))
        self.assertEqual(message.mail_parameters, [f"size={len(BODY)}"])

    async def test_rcptRetriedAcrossSessions(self):
        """
        A scripted 451 on the first RCPT for an address turns into 250 the next time.
        """
        sink, port = self.start()
        sink.rcpt_reply = lambda address, attempt: (
            (451, "4.3.0 Try later") if attempt == 1 else (250, "2.1.5 OK"))

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("a@example.org", ["b@example.net"], BODY)

        with self.assertRaises(smtplib.SMTPRecipientsRefused) as refused:
            await deferToThread(send)
        self.assertEqual(refused.exception.recipients["b@example.net"][0], 451)
        await deferToThread(send)
        self.assertEqual([m.recipients for m in sink.received], [["b@example.net"]])
        self.assertEqual(sink.sessions, 2)

    async def test_dataRefused(self):
        """
        A non-2xx end-of-data reply reaches the client and keeps the message out of received.
        """
        sink, port = self.start()
        judged = []
        sink.data_reply = lambda message, attempt: judged.append(message) or (
            554, "5.6.0 No thanks")

        def send():
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("a@example.org", ["b@example.net"], BODY)

        with self.assertRaises(smtplib.SMTPDataError) as refused:
            await deferToThread(send)
        self.assertEqual(refused.exception.smtp_code, 554)
        self.assertEqual([m.data for m in judged], [BODY])
        self.assertEqual(sink.received, [])

    async def test_starttlsAndAuth(self):
        """
        AUTH is offered only inside TLS, and AUTH PLAIN then LOGIN work with the test CA.
        """
        sink, port, context = self.tls_sink()

        def send(mechanism):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo()
                offered_in_plain = client.has_extn("auth")
                client.starttls(context=context)
                client.ehlo()
                refused_before_auth = client.mail("a@example.org")[0]
                client.rset()
                client.user, client.password = "alice", "secret"
                client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()),
                            initial_response_ok=mechanism == "PLAIN")
                client.sendmail("a@example.org", ["b@example.net"], BODY)
                return offered_in_plain, refused_before_auth

        self.assertEqual(await deferToThread(send, "PLAIN"), (False, 530))
        await deferToThread(send, "LOGIN")
        self.assertEqual([m.tls for m in sink.received], [True, True])

    async def test_starttlsDiscardsPipelinedCommands(self):
        """
        Commands sent in the same packet as STARTTLS are not run (RFC 3207 4.2).
        """
        _, port, context = self.tls_sink()

        def session():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"EHLO client.example\r\nSTARTTLS\r\n"
                            b"EHLO evil.example\r\nMAIL FROM:<evil@example.org>\r\n")
                plain = b""
                while not plain.endswith(b"\r\n220 2.0.0 Ready to start TLS\r\n"):
                    chunk = raw.recv(1)  # one byte at a time: leave the TLS bytes unread
                    if not chunk:
                        raise ConnectionError(plain)
                    plain += chunk
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"RCPT TO:<b@example.net>\r\n")
                    return tls.recv(1024)

        self.assertTrue((await deferToThread(session)).startswith(b"503 "))

    async def test_waitTimesOut(self):
        """
        Waiting for a message that never comes fails the test instead of hanging it.
        """
        sink, _ = self.start()
        with self.assertRaises(AssertionError) as failed:
            await sink.wait_for_messages(1, timeout=0.1)
        self.assertIn("expected 1 messages within 0.1s, received 0", str(failed.exception))
