"""
Tests for L{mailsrv.queue.dsn}: bounces are parsed back with the stdlib
C{email} package and their wire form is checked octet by octet.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from datetime import UTC, datetime

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.queue.dsn import FailedRecipient, build_bounce

ORIGINAL = (b"Subject: Lunch on Friday\r\n"
            b"Message-ID: <lunch.1@example.org>\r\n"
            b"From: alice@example.org\r\n"
            b"\r\n"
            b"Shall we meet at noon?\r\n")

BOB = FailedRecipient(address="bob@remote.test", status="5.1.1",
                      diagnostic="550 5.1.1 <bob@remote.test>: no such user",
                      remote_mta="mx.remote.test", last_attempt=1_700_000_600.0)


def bounce(failed: tuple[FailedRecipient, ...] = (BOB,), original: bytes = ORIGINAL,
           now: float = 1_700_000_700.0) -> bytes:
    """
    Build a bounce for alice with the fixed data of these tests.
    """
    return build_bounce(hostname="mail.example.org", queue_id="Q123", sender="alice@example.org",
                        arrival=1_700_000_000.0, failed=list(failed), original=original, now=now)


class BounceTests(SynchronousTestCase):
    def parse(self, raw: bytes):
        """
        Check what every bounce must be and return it parsed: the message,
        its human text, the delivery-status field groups and the returned
        header bytes as they were before any transfer encoding.
        """
        self.assertNotRegex(raw, rb"[^\r]\n|\r[^\n]", "bare CR or LF")
        self.assertTrue(raw.endswith(b"\r\n"))
        for line in raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 998, line[:80])
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(message.defects, [])
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        self.assertEqual(message["Auto-Submitted"], "auto-replied")
        self.assertEqual(message["To"], "alice@example.org")
        self.assertEqual(message["From"].addresses[0].addr_spec, "MAILER-DAEMON@mail.example.org")
        self.assertTrue(message["Message-ID"].endswith("@mail.example.org>"))
        human, status, headers = message.get_payload()
        self.assertEqual(human.get_content_type(), "text/plain")
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        self.assertEqual(status["Content-Transfer-Encoding"], "7bit")
        self.assertIn(headers.get_content_type(),
                      ("text/rfc822-headers", "message/global-headers"))
        # The returned headers, read off the wire: the last part's body.
        boundary = message.get_boundary().encode()
        wire = raw.split(b"\r\n--" + boundary)[3]
        head, _, body = wire.partition(b"\r\n\r\n")
        if b"quoted-printable" in head:
            body = binascii.a2b_qp(body)
        groups = [dict(block.items()) for block in status.get_payload()]
        return message, human.get_content(), groups, body

    def test_oneRecipient(self):
        """
        A 5xx reply becomes a multipart/report with a human part, the
        delivery-status fields and the original's headers only (RFC 3464
        sections 2.2 and 2.3, RFC 6522).
        """
        message, human, groups, headers = self.parse(bounce())
        self.assertEqual(message["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual(groups, [
            {"Reporting-MTA": "dns; mail.example.org", "X-Mailsrv-Queue-ID": "Q123",
             "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000"},
            {"Final-Recipient": "rfc822; bob@remote.test", "Action": "failed",
             "Status": "5.1.1", "Remote-MTA": "dns; mx.remote.test",
             "Diagnostic-Code": "smtp; 550 5.1.1 <bob@remote.test>: no such user",
             "Last-Attempt-Date": "Tue, 14 Nov 2023 22:23:20 +0000"},
        ])
        self.assertIn("mail.example.org", human)
        self.assertIn("<bob@remote.test>", human)
        self.assertIn("mx.remote.test", human)
        self.assertIn("550 5.1.1 <bob@remote.test>: no such user", human)
        self.assertEqual(headers, ORIGINAL[:ORIGINAL.index(b"\r\n\r\n") + 2])
        self.assertNotIn(b"noon", headers)

    def test_severalRecipients(self):
        """
        Each recipient gets its own field group; Remote-MTA appears only when
        a remote MTA answered, and our own text is not typed as an SMTP reply
        (RFC 3464 sections 2.3.5 and 2.3.6).
        """
        carol = FailedRecipient(address="carol@remote.test", status="5.7.1",
                                diagnostic="554 5.7.1 rejected by policy")
        dave = FailedRecipient(address="dave@slow.test", status="4.4.1",
                               diagnostic="gave up after 5 days: connection timed out",
                               from_remote=False)
        _, human, groups, _ = self.parse(bounce((BOB, carol, dave)))
        self.assertEqual(len(groups), 4)
        self.assertEqual(groups[1]["Final-Recipient"], "rfc822; bob@remote.test")
        self.assertEqual(groups[2], {
            "Final-Recipient": "rfc822; carol@remote.test", "Action": "failed",
            "Status": "5.7.1", "Diagnostic-Code": "smtp; 554 5.7.1 rejected by policy"})
        self.assertEqual(groups[3], {
            "Final-Recipient": "rfc822; dave@slow.test", "Action": "failed", "Status": "4.4.1",
            "Diagnostic-Code": "X-mailsrv; gave up after 5 days: connection timed out"})
        for text in ("<carol@remote.test>", "554 5.7.1 rejected by policy",
                     "<dave@slow.test>", "gave up after 5 days: connection timed out"):
            self.assertIn(text, human)

    def test_noSeparator(self):
        """
        An original without an empty line is all header section (RFC 5322
        section 2.1) and is returned whole, up to 64 KiB.
        """
        headers_only = b"Subject: Lunch on Friday\r\nMessage-ID: <lunch.2@example.org>\r\n"
        self.assertEqual(self.parse(bounce(original=headers_only))[3], headers_only)
        huge = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 60) for i in range(5000))
        returned = self.parse(bounce(original=huge))[3]
        self.assertTrue(huge.startswith(returned.rstrip(b"\r\n")))
        self.assertLessEqual(len(returned), 64 * 1024 + 2)

    def test_eightBitHeaders(self):
        """
        UTF-8 headers come back as message/global-headers (RFC 6533) and
        other 8-bit bytes as text/rfc822-headers, both quoted-printable so
        that the bounce stays 7-bit (RFC 6522).
        """
        for raw_subject, content_type in [("Café".encode(), "message/global-headers"),
                                          (b"Caf\xe9 \x00", "text/rfc822-headers")]:
            original = b"Subject: " + raw_subject + b"\r\nMessage-ID: <8@x>\r\n\r\nbody\r\n"
            raw = bounce(original=original)
            self.assertTrue(raw.isascii())
            message, _, _, headers = self.parse(raw)
            self.assertEqual(message.get_payload(2).get_content_type(), content_type)
            self.assertEqual(headers, original[:original.index(b"\r\n\r\n") + 2])

    def test_utf8Recipient(self):
        """
        A non-ASCII recipient is of the utf-8 address type, written in the
        7-bit utf-8-addr-xtext form (RFC 6533 section 3).
        """
        jorg = FailedRecipient(address="jörg+tag@bücher.test", status="5.1.1",
                               diagnostic="550 5.1.1 unknown user", remote_mta="mx.bücher.test")
        raw = bounce((jorg,))
        self.assertTrue(raw.isascii())
        _, human, groups, _ = self.parse(raw)
        self.assertEqual(groups[1]["Final-Recipient"],
                         r"utf-8; j\x{F6}rg\x{2B}tag@b\x{FC}cher.test")
        self.assertIn("<jörg+tag@bücher.test>", human)

    def test_diagnosticSanitised(self):
        """
        Line breaks in a reply cannot start a field of their own, and a long
        reply is folded into lines of at most 998 octets (RFC 5322 section
        2.1.1).
        """
        reply = "550 no\r\nAction: delivered\r\n\r\nStatus: 2.0.0\n" + "z" * 3000
        evil = FailedRecipient(address="bob@remote.test", status="5.0.0", diagnostic=reply,
                               remote_mta="mx.remote.test")
        raw = bounce((evil,))
        _, _, groups, _ = self.parse(raw)
        self.assertEqual(groups[1]["Action"], "failed")
        self.assertEqual(groups[1]["Status"], "5.0.0")
        self.assertEqual(len(groups), 2)
        self.assertTrue(groups[1]["Diagnostic-Code"].startswith(
            "smtp; 550 no Action: delivered Status: 2.0.0 zzz"))
        self.assertEqual(groups[1]["Diagnostic-Code"].count("z"), 3000)
        self.assertIsNone(re.search(rb"^Action: delivered", raw, re.MULTILINE))

    def test_nullSender(self):
        """
        The null sender never gets a bounce (RFC 5321 section 4.5.5), so
        asking for one is a bug.
        """
        with self.assertRaises(ValueError):
            build_bounce(hostname="mail.example.org", queue_id="Q1", sender="", arrival=0.0,
                         failed=[BOB], original=ORIGINAL)

    def test_now(self):
        """
        C{now} is the bounce's origination date (RFC 5322 section 3.6.1).
        """
        message = self.parse(bounce(now=1_800_000_000.0))[0]
        self.assertEqual(message["Date"].datetime, datetime.fromtimestamp(1_800_000_000, UTC))
