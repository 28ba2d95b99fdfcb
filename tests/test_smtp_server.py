"""
End-to-end tests of the ESMTP server: real listeners on 127.0.0.1, built by
make_service, driven by Python's smtplib and by a raw socket where the
test needs exact bytes on the wire (pipelining, STARTTLS injection,
smuggling).  Blocking clients run in threads so the reactor keeps serving.
"""

from __future__ import annotations

import errno
import os
import smtplib
import socket
import ssl
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from mailsrv.config import load_settings
from mailsrv.cred.passwd_file import set_password
from mailsrv.service import make_service
from mailsrv.store.interfaces import TemporaryStoreError
from mailsrv.store.maildir import user_directory
from tests.server import write_test_config
from tests.test_passwords import cheap_hash

ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "wonderland"
MESSAGE = (b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: test\r\n\r\n"
           b"Hello Alice.\r\n.A line that starts with a dot.\r\n")


class Wire:
    """
    A raw SMTP client: send exact bytes, read whole replies.
    """

    def __init__(self, port: int, context: ssl.SSLContext | None = None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, bytes]:
        """
        The next complete reply: its code and its (joined) text.
        """
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed after {lines!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(item[4:] for item in lines)

    def command(self, data: bytes) -> tuple[int, bytes]:
        self.send(data + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, OSError):
            return True

    def close(self):
        self.sock.close()


class SMTPTestCase(TestCase):
    """
    A running server with users alice and bob of example.org, an alias
    info@ -> alice, and every SMTP role listening.
    """

    config = ""

    def setUp(self):
        directory = Path(self.mktemp()).absolute()
        config, ca = write_test_config(
            directory, '[domains."example.org"]\naliases = { info = ["alice"] }\n'
            + self.config, roles=("smtp", "submission", "submissions"))
        self.client_tls_path = ca
        self.client_tls = ssl.create_default_context(cafile=str(ca))
        settings = load_settings(config, environ={})
        self.settings = settings
        settings.data_dir.mkdir(parents=True)
        for user in (ALICE, BOB):
            set_password(Path(settings.auth.passwd_file), user, cheap_hash(PASSWORD),
                         create=True)
        self.service = make_service(settings, reactor=reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.ports = {listener.role: listener.port.getHost().port
                      for listener in self.service.listeners()}

    def inbox(self, address: str) -> list[bytes]:
        """
        The messages in a user's INBOX, read from disk.
        """
        home = user_directory(self.settings.store.path, address)
        files = sorted((home / sub / name for sub in ("new", "cur")
                        if (home / sub).is_dir() for name in (home / sub).iterdir()),
                       key=lambda p: p.name)
        return [f.read_bytes() for f in files]

    def in_thread(self, function, *args) -> Deferred:
        return deferToThread(function, *args)

    def submit_as_alice(self, sender: str) -> Deferred:
        """
        Log in as alice on submissions (465) and send to bob from C{sender}.

        @return: a L{Deferred} of C{sendmail}'s refused recipients.
        """
        def send():
            with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"],
                                  context=self.client_tls) as client:
                client.login(ALICE, PASSWORD)
                return client.sendmail(sender, [BOB], MESSAGE)

        return self.in_thread(send)

    def wire(self, role="smtp", tls=False) -> Wire:
        wire = Wire(self.ports[role], self.client_tls if tls else None)
        self.addCleanup(wire.close)
        return wire

    def data_outcome(self, data: bytes) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        """
        Send C{data} after DATA in a transaction to alice (blocking: run it
        in a thread); return the reply to it and to a NOOP after it.
        """
        wire = self.wire()
        wire.command(b"EHLO client.example.net")
        wire.command(b"MAIL FROM:<a@example.net>")
        wire.command(b"RCPT TO:<alice@example.org>")
        wire.command(b"DATA")
        wire.send(data)
        return wire.reply(), wire.command(b"NOOP")


class MXTests(SMTPTestCase):
    async def test_deliverToLocalUser(self):
        """
        On the MX listener anyone may send to a local user; the message is
        stored with Return-Path and a Received trace (RFC 5321 4.4), the
        leading dot unstuffed, and 250 comes only after it is stored.
        """
        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"]) as client:
                client.ehlo("client.example.net")
                return client.sendmail("bob@example.net", [ALICE], MESSAGE)

        self.assertEqual(await self.in_thread(send), {})
        [stored] = self.inbox(ALICE)
        self.assertTrue(stored.startswith(b"Return-Path: <bob@example.net>\r\nReceived: from "
                                          b"client.example.net ([127.0.0.1])\r\n"), stored)
        self.assertIn(b"by localhost (mailsrv) with ESMTP id ", stored)
        self.assertIn(b"for <alice@example.org>;", stored)
        self.assertTrue(stored.endswith(MESSAGE), stored)

    async def test_oneLogLinePerMessage(self):
        """
        Each accepted message is logged once, with its id, sender,
        recipients, size, peer, TLS and user.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"]) as client:
                return client.sendmail("bob@example.net", [ALICE, BOB], MESSAGE)

        await self.in_thread(send)
        [event] = [e for e in events if e.get("log_format", "").startswith("Delivered")]
        self.assertEqual((event["sender"], event["recipients"], event["peer"], event["tls"],
                          event["user"]),
                         ("bob@example.net", f"{ALICE},{BOB}", "127.0.0.1", "none", "-"))
        [stored] = self.inbox(ALICE)
        # The size received: the stored copy less the Return-Path added at delivery.
        self.assertEqual(event["size"], len(stored) - len(b"Return-Path: <bob@example.net>\r\n"))
        self.assertIn(event["id"], stored.decode())

    async def test_extensionsAdvertised(self):
        def ehlo():
            wire = self.wire()
            return wire.command(b"EHLO client.example.net")

        code, text = await self.in_thread(ehlo)
        self.assertEqual(code, 250)
        extensions = text.split(b"\n")[1:]
        self.assertEqual(extensions, [b"SIZE 26214400", b"8BITMIME", b"PIPELINING",
                                      b"ENHANCEDSTATUSCODES", b"SMTPUTF8", b"CHUNKING",
                                      b"STARTTLS"])

    async def test_recipientChecks(self):
        """
        Unknown local users are refused at RCPT (550 5.1.1); postmaster is
        always taken (RFC 5321 4.5.1); aliases resolve; and the MX is no
        open relay (554 5.7.1).
        """
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            results = [wire.command(b"MAIL FROM:<someone@example.net>")]
            for rcpt in (b"<nobody@example.org>", b"<Postmaster@example.org>", b"<Postmaster>",
                         b"<info@example.org>", b"<victim@elsewhere.example>"):
                results.append(wire.command(b"RCPT TO:" + rcpt))
            return [code for code, _ in results], results[1][1], results[5][1]

        codes, unknown, relay = await self.in_thread(session)
        self.assertEqual(codes, [250, 550, 250, 250, 250, 554])
        self.assertTrue(unknown.startswith(b"5.1.1 "))
        self.assertTrue(relay.startswith(b"5.7.1 "))

    async def test_oneCopyPerMailbox(self):
        """
        alice named directly and through an alias gets the message once.
        """
        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"]) as client:
                return client.sendmail("x@example.net", [ALICE, "info@example.org"], MESSAGE)

        await self.in_thread(send)
        self.assertEqual(len(self.inbox(ALICE)), 1)

    async def test_pipelining(self):
        """
        RFC 2920: a whole transaction in one packet is answered in order.
        """
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\n"
                      b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
            codes = [wire.reply()[0] for _ in range(5)]
            wire.send(MESSAGE + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
            codes += [wire.reply()[0] for _ in range(4)]
            return codes

        self.assertEqual(await self.in_thread(session),
                         [250, 550, 250, 250, 354, 250, 250, 250, 221])
        self.assertEqual(len(self.inbox(ALICE)), 1)
        self.assertEqual(len(self.inbox(BOB)), 1)

    async def test_smtputf8(self):
        """
        RFC 6531: with SMTPUTF8, a UTF-8 sender and UTF-8 headers are taken
        and delivered as they are; without it, a UTF-8 address is refused
        with 5.6.7.
        """
        body = "From: Jörg <jörg@example.net>\r\nSubject: Grüße\r\n\r\nHallo!\r\n"

        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            refused = wire.command("MAIL FROM:<jörg@example.net>".encode())
            results = [wire.command("MAIL FROM:<jörg@example.net> SMTPUTF8".encode()),
                       wire.command(b"RCPT TO:<alice@example.org>"), wire.command(b"DATA")]
            wire.send(body.encode() + b".\r\n")
            results.append(wire.reply())
            return refused, [code for code, _ in results]

        refused, codes = await self.in_thread(session)
        self.assertEqual((refused[0], refused[1][:5]), (550, b"5.6.7"))
        self.assertEqual(codes, [250, 250, 354, 250])
        [stored] = self.inbox(ALICE)
        self.assertIn("Return-Path: <jörg@example.net>".encode(), stored)
        self.assertIn(b"with UTF8SMTP id", stored)
        self.assertTrue(stored.endswith(body.encode()))

    async def test_utf8Recipient(self):
        """
        A user whose address is UTF-8 (RFC 6531) receives mail sent with
        SMTPUTF8.
        """
        set_password(Path(self.settings.auth.passwd_file), "jörg@example.org",
                     cheap_hash(PASSWORD), create=True)

        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            codes = [wire.command(b"MAIL FROM:<a@example.net> SMTPUTF8")[0],
                     wire.command("RCPT TO:<Jörg@example.org>".encode())[0],
                     wire.command(b"DATA")[0]]
            wire.send(b"Subject: hi\r\n\r\nHallo.\r\n.\r\n")
            return [*codes, wire.reply()[0]]

        self.assertEqual(await self.in_thread(session), [250, 250, 354, 250])
        [stored] = self.inbox("jörg@example.org")
        self.assertTrue(stored.endswith(b"Hallo.\r\n"))

    async def test_bdat(self):
        """
        RFC 3030 CHUNKING: chunks taken as given, pipelined, LAST ends it.
        """
        body = MESSAGE.replace(b".A line", b"A line")
        first, second = body[:40], body[40:]

        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
                      + b"BDAT %d\r\n" % len(first) + first
                      + b"BDAT %d LAST\r\n" % len(second) + second + b"NOOP\r\n")
            return [wire.reply() for _ in range(5)]

        replies = await self.in_thread(session)
        self.assertEqual([code for code, _ in replies], [250, 250, 250, 250, 250])
        self.assertEqual(replies[2][1], b"2.0.0 Ok, %d octets" % len(first))
        [stored] = self.inbox(ALICE)
        self.assertTrue(stored.endswith(body))


class LimitTests(SMTPTestCase):
    config = ("[limits]\nmax_message_size = 2000\nmax_recipients = 2\nmax_errors = 3\n"
              "max_connections_per_ip = 3\n")

    async def test_declaredSizeRefused(self):
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            return wire.command(b"MAIL FROM:<a@example.net> SIZE=2001")

        self.assertEqual(await self.in_thread(session),
                         (552, b"5.3.4 Message size exceeds fixed maximum message size"))

    async def test_bodyTooLargeReadThenRefused(self):
        """
        A body over the limit is read to its end and refused with 552 5.3.4;
        the session goes on (RFC 1870 6.3).
        """
        result, noop = await self.in_thread(
            self.data_outcome, b"Subject: big\r\n\r\n" + b"x" * 900 + b"\r\n" + b"y" * 900
            + b"\r\n" + b"z" * 900 + b"\r\n.\r\n")
        self.assertEqual(result, (552, b"5.3.4 Message size exceeds fixed maximum message size"))
        self.assertEqual(noop[0], 250)
        self.assertEqual(self.inbox(ALICE), [])

    async def test_tooManyRecipients(self):
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.command(b"MAIL FROM:<a@example.net>")
            return [wire.command(b"RCPT TO:<%s>" % r)[0]
                    for r in (b"alice@example.org", b"bob@example.org", b"info@example.org")]

        self.assertEqual(await self.in_thread(session), [250, 250, 452])

    async def test_tooManyErrors(self):
        def session():
            wire = self.wire()
            codes = [wire.command(b"BOGUS")[0] for _ in range(3)]
            codes.append(wire.reply()[0])
            return codes, wire.closed()

        self.assertEqual(await self.in_thread(session), ([500, 500, 500, 421], True))

    async def test_connectionsPerAddress(self):
        def session():
            wires = [self.wire() for _ in range(3)]
            extra = Wire(self.ports["smtp"])
            return [w.greeting[0] for w in wires], extra.greeting, extra.closed()

        codes, refused, closed = await self.in_thread(session)
        self.assertEqual(codes, [220, 220, 220])
        self.assertEqual(refused[0], 421)
        self.assertTrue(refused[1].startswith(b"4.7.0 "))
        self.assertTrue(closed)


class SafetyTests(SMTPTestCase):
    async def test_starttlsDiscardsPipelinedCommands(self):
        """
        CVE-2011-0411: commands sent in the same packet as STARTTLS are not
        executed; after the handshake the session starts over (RFC 3207 4.2).
        """
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n"
                      b"RCPT TO:<alice@example.org>\r\n")
            ready = wire.reply()
            wire.starttls(self.client_tls)
            return ready, wire.command(b"RCPT TO:<alice@example.org>"), \
                wire.command(b"MAIL FROM:<a@example.net>")

        ready, rcpt, mail = await self.in_thread(session)
        self.assertEqual(ready[0], 220)
        self.assertEqual(rcpt[0], 503)
        self.assertEqual(mail[0], 503)  # EHLO must be sent again after TLS

    async def test_smuggling(self):
        """
        SMTP smuggling (CVE-2023-51766 class): only CRLF.CRLF ends DATA, and
        a message with a bare LF or CR is refused once read; what follows
        the fake end is never run as commands.
        """
        for trick in (b"\n.\n", b"\r\n.\r", b"\n.\r\n"):
            refused, noop = await self.in_thread(
                self.data_outcome, b"Subject: x\r\n\r\nbody" + trick
                + b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n\r\n"
                b"smuggled\r\n.\r\n")
            self.assertEqual(refused[0], 554, trick)
            self.assertTrue(refused[1].startswith(b"5.6.0 Bare CR or LF"), refused)
            self.assertEqual(noop[0], 250)
        self.assertEqual(self.inbox(ALICE) + self.inbox(BOB), [])

    async def test_nulInData(self):
        refused, noop = await self.in_thread(
            self.data_outcome, b"Subject: x\r\n\r\nnul \0 here\r\n.\r\n")
        self.assertEqual(refused, (554, b"5.6.0 NUL in message not allowed"))
        self.assertEqual(noop[0], 250)
        self.assertEqual(self.inbox(ALICE), [])

    async def test_badCommandLines(self):
        def session():
            wire = self.wire()
            return [wire.command(b"NOOP\0x")[0], wire.command(b"X" * 20000)[0],
                    wire.command(b"\xff\xfe")[0],
                    wire.command(b"EHLO x\nX-Injected: header")[0],
                    wire.command(b"HELO x\ry")[0], wire.command(b"NOOP")[0]]

        self.assertEqual(await self.in_thread(session), [500, 500, 500, 500, 500, 250])

    async def test_splitAcrossPackets(self):
        """
        The end marker, dot-stuffing and an over-long line are recognised
        however the bytes are cut into packets.
        """
        def send(pieces):
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.command(b"MAIL FROM:<a@example.net>")
            wire.command(b"RCPT TO:<alice@example.org>")
            wire.command(b"DATA")
            for piece in pieces:
                wire.send(piece)
                time.sleep(0.05)
            return wire.reply()

        stuffed = [b"Subject: x\r\n\r\nfirst\r\n.", b".dot line\r\n.", b"\r\n"]
        self.assertEqual((await self.in_thread(send, stuffed))[0], 250)
        [stored] = self.inbox(ALICE)
        self.assertTrue(stored.endswith(b"\r\n\r\nfirst\r\n.dot line\r\n"), stored)
        long_line = [b"Subject: x\r\n\r\n", b"y" * 700, b"y" * 700, b"y\r\nok\r\n.\r\n"]
        self.assertEqual((await self.in_thread(send, long_line))[0], 554)
        self.assertEqual(len(self.inbox(ALICE)), 1)

    async def test_longLineInData(self):
        refused, noop = await self.in_thread(
            self.data_outcome, b"Subject: x\r\n\r\n" + b"x" * 5000 + b"\r\nRSET\r\n.\r\n")
        self.assertEqual(refused[0], 554)
        self.assertEqual(noop[0], 250)


class SubmissionTests(SMTPTestCase):
    async def test_authRequiredAndOnlyAfterTLS(self):
        def session():
            wire = self.wire("submission")
            ehlo = wire.command(b"EHLO client.example.net")
            auth = wire.command(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdvbmRlcmxhbmQ=")
            mail = wire.command(b"MAIL FROM:<alice@example.org>")
            return ehlo, auth, mail

        ehlo, auth, mail = await self.in_thread(session)
        self.assertNotIn(b"AUTH", ehlo[1])
        self.assertIn(b"STARTTLS", ehlo[1])
        self.assertEqual(auth[0], 538)
        self.assertEqual(mail[0], 530)

    async def test_sendWithStartTLSAndAuth(self):
        """
        smtplib with STARTTLS and AUTH (PLAIN, then LOGIN) sends as the user.
        """
        for mechanism in ("PLAIN", "LOGIN"):
            def send(mechanism=mechanism):
                with smtplib.SMTP("127.0.0.1", self.ports["submission"]) as client:
                    client.starttls(context=self.client_tls)
                    client.ehlo()
                    client.user, client.password = ALICE, PASSWORD
                    client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()),
                                initial_response_ok=mechanism == "PLAIN")
                    return client.sendmail(ALICE, [BOB], MESSAGE)

            self.assertEqual(await self.in_thread(send), {})
        stored = self.inbox(BOB)
        self.assertEqual(len(stored), 2)
        self.assertIn(b"with ESMTPSA id", stored[0])
        self.assertRegex(stored[0], rb"\(TLSv1\.[23] cipher [A-Z0-9_-]+\)")

    async def test_implicitTLS(self):
        self.assertEqual(await self.submit_as_alice("info@example.org"), {})
        self.assertEqual(len(self.inbox(BOB)), 1)

    async def test_wrongPasswordAndSenderRules(self):
        def session():
            wire = self.wire("submissions", tls=True)
            wire.command(b"EHLO client.example.net")
            bad = wire.command(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdyb25n")
            good = wire.command(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdvbmRlcmxhbmQ=")
            forged = wire.command(b"MAIL FROM:<bob@example.org>")
            own = wire.command(b"MAIL FROM:<alice@example.org>")
            remote = wire.command(b"RCPT TO:<someone@elsewhere.example>")
            return bad, good, forged, own, remote

        bad, good, forged, own, remote = await self.in_thread(session)
        self.assertEqual(bad[0], 535)
        self.assertEqual(good[0], 235)
        self.assertEqual(forged[:1], (553,))
        self.assertTrue(forged[1].startswith(b"5.7.1 "))
        self.assertEqual(own[0], 250)
        self.assertEqual(remote[0], 250)


class QuotaTests(SMTPTestCase):
    config = '[store]\nuser_quotas = { "alice@example.org" = 100 }\n'

    async def test_overQuota(self):
        """
        A message that would take a mailbox over its quota is refused with
        552 5.2.2 (RFC 3463), permanently, since nothing else failed.
        """
        def send(recipients):
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"]) as client:
                try:
                    client.sendmail("x@example.net", recipients, MESSAGE)
                except smtplib.SMTPDataError as e:
                    return e.smtp_code, e.smtp_error
                return 250, b""

        code, text = await self.in_thread(send, [ALICE])
        self.assertEqual(code, 552)
        self.assertTrue(text.startswith(b"5.2.2 "), text)
        self.assertEqual(self.inbox(ALICE), [])
        self.assertEqual((await self.in_thread(send, [BOB]))[0], 250)


class DiskFullTests(SMTPTestCase):
    async def test_diskFullIsTemporary(self):
        """
        When the store cannot write the message (here: a full disk), the
        answer is 451 4.3.0, so the client keeps the message and retries;
        nothing half-written is left in the Maildir (RFC 5321 4.2.5: no 250
        until the message is safe).
        """
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "fsync", full)
        refused, noop = await self.in_thread(self.data_outcome, MESSAGE + b".\r\n")
        self.assertEqual(refused, (451, b"4.3.0 Could not store the message now, try again "
                                   b"later"))
        self.assertEqual(noop[0], 250)
        self.flushLoggedErrors(TemporaryStoreError)
        self.assertEqual(self.inbox(ALICE), [])


class OpenSenderTests(SMTPTestCase):
    config = "[auth]\nrestrict_senders = false\n"

    async def test_anySender(self):
        self.assertEqual(await self.submit_as_alice("bob@example.org"), {})


class TimeoutTests(SMTPTestCase):
    config = "[limits]\ncommand_timeout = 0.3\ndata_timeout = 0.6\nmax_auth_failures = 2\n"

    async def test_idleSessionClosed(self):
        def session():
            wire = self.wire()
            return wire.reply(), wire.closed()

        reply, closed = await self.in_thread(session)
        self.assertEqual(reply[0], 421)
        self.assertTrue(reply[1].startswith(b"4.4.2"))
        self.assertTrue(closed)

    async def test_dataTimeout(self):
        """
        Inside DATA the data timeout applies (RFC 5321 4.5.3.2.5), longer
        than the command one here, and nothing half-received is stored.
        """
        def session():
            wire = self.wire()
            wire.command(b"EHLO client.example.net")
            wire.command(b"MAIL FROM:<a@example.net>")
            wire.command(b"RCPT TO:<alice@example.org>")
            wire.command(b"DATA")
            wire.send(b"Subject: slow\r\n")
            started = time.monotonic()
            reply = wire.reply()
            return reply, time.monotonic() - started, wire.closed()

        reply, waited, closed = await self.in_thread(session)
        self.assertEqual(reply[0], 421)
        self.assertGreater(waited, 0.45)
        self.assertTrue(closed)
        self.assertEqual(self.inbox(ALICE), [])

    async def test_authFailuresLimit(self):
        def session():
            wire = self.wire("submissions", tls=True)
            wire.command(b"EHLO client.example.net")
            codes = [wire.command(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdyb25n")[0]
                     for _ in range(2)]
            return codes, wire.closed()

        self.assertEqual(await self.in_thread(session), ([535, 421], True))

