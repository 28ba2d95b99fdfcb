"""
End-to-end tests of the IMAP server with Python's imaplib over STARTTLS
and implicit TLS, against the real listeners of an in-process server.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
import time
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailsrv.config import load_settings
from mailsrv.cred.passwd_file import set_password
from mailsrv.service import make_service
from mailsrv.store.maildir import MaildirUserStore, user_directory
from tests.server import write_test_config
from tests.test_passwords import cheap_hash

ALICE, BOB, PASSWORD = "alice@example.org", "bob@example.org", "wonderland"

MESSAGE = (b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
           b"Subject: Hello there\r\nMessage-ID: <1@example.org>\r\n"
           b"Date: Mon, 02 Feb 2026 10:00:00 +0000\r\n\r\n"
           b"Hi Alice,\r\n.a line starting with a dot\r\n" + b"x" * 996 + b"\r\nBye.\r\n")


class IMAPTestCase(TestCase):
    config = ""
    roles = ("smtp", "imap", "imaps")

    def setUp(self):
        directory = Path(self.mktemp()).absolute()
        config, ca = write_test_config(directory, '[domains."example.org"]\n' + self.config,
                                       roles=self.roles)
        self.ca = ca
        self.settings = load_settings(config, environ={})
        self.settings.data_dir.mkdir(parents=True)
        for user in (ALICE, BOB):
            set_password(Path(self.settings.auth.passwd_file), user, cheap_hash(PASSWORD),
                         create=True)
        service = make_service(self.settings, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.ports = {listener.role: listener.port.getHost().port
                      for listener in service.listeners()}

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def in_thread(self, function, *args):
        return deferToThread(function, *args)

    def deliver(self, message: bytes = MESSAGE, to: str = ALICE) -> None:
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"]) as client:
            client.sendmail("bob@example.org", [to], message)

    def login(self, user: str = ALICE, implicit: bool = True) -> imaplib.IMAP4:
        if implicit:
            client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"],
                                       ssl_context=self.tls(), timeout=20)
        else:
            client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=20)
            client.starttls(self.tls())
        # Cleanups run in the reactor thread, which the server needs.
        self.addCleanup(deferToThread, _logout, client)
        client.login(user, PASSWORD)
        return client

    def wait_for_inbox(self, count: int) -> None:
        """
        Deliveries get their UID soon after 250 (the store files them).
        """
        client = self.login()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if int(client.select("INBOX")[1][0]) >= count:
                return
            time.sleep(0.05)
        raise AssertionError("messages did not arrive")


    def raw_session(self, messages: int = 0, flags: bytes = b"",
                    message: bytes = MESSAGE) -> Raw:
        """
        A bare socket logged in as alice over implicit TLS, with C{messages}
        copies of C{message} appended (with C{flags}) and INBOX selected.
        """
        raw = Raw(self.ports["imaps"], self.tls())
        self.addCleanup(raw.close)
        raw.send(b"l LOGIN alice@example.org wonderland\r\n")
        raw.until_tagged(b"l")
        for n in range(messages):
            raw.send(b"a%d APPEND INBOX (%s) {%d+}\r\n" % (n, flags, len(message)) + message
                     + b"\r\n")
            raw.until_tagged(b"a%d" % n)
        raw.send(b"s SELECT INBOX\r\n")
        raw.until_tagged(b"s")
        return raw


def _logout(client):
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


class Raw:
    """
    A bare socket for exact-response tests.
    """

    def __init__(self, port: int, context: ssl.SSLContext | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.buffer = b""
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def close(self):
        self.sock.close()


class LoginTests(IMAPTestCase):
    async def test_plainListenerBeforeTLS(self):
        """
        RFC 3501 6.2.3 and 7.2.1: without TLS the server offers STARTTLS and
        LOGINDISABLED, refuses LOGIN, and after STARTTLS offers AUTH=PLAIN.
        """
        def session():
            raw = Raw(self.ports["imap"])
            raw.send(b"a CAPABILITY\r\nb LOGIN alice@example.org wonderland\r\n")
            capability = raw.until_tagged(b"a")
            login = raw.until_tagged(b"b")
            raw.close()
            return raw.greeting, capability, login

        greeting, capability, login = await self.in_thread(session)
        self.assertIn(b"STARTTLS", greeting)
        self.assertIn(b"LOGINDISABLED", capability[0])
        self.assertNotIn(b"AUTH=PLAIN", capability[0])
        self.assertTrue(login[-1].startswith(b"b NO [PRIVACYREQUIRED]"))

        def starttls():
            client = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=20)
            client.starttls(self.tls())
            capabilities = client.capabilities
            client.login(ALICE, PASSWORD)
            client.logout()
            return capabilities

        capabilities = await self.in_thread(starttls)
        self.assertIn("AUTH=PLAIN", capabilities)
        self.assertNotIn("STARTTLS", capabilities)

    async def test_starttlsDiscardsPipelinedCommands(self):
        """
        Commands pipelined after STARTTLS in the same packet are not run
        (RFC 3501 6.2.1; twisted.mail runs them, notes 1.5 #10).
        """
        def session():
            raw = Raw(self.ports["imap"])
            raw.send(b"a STARTTLS\r\nb NOOP\r\n")
            answer = raw.until_tagged(b"a")
            tls = self.tls().wrap_socket(raw.sock, server_hostname="localhost")
            tls.sendall(b"c NOOP\r\n")
            data = b""
            while b"c OK" not in data:
                data += tls.recv(4096)
            tls.close()
            return answer, data

        answer, after = await self.in_thread(session)
        self.assertEqual(answer, [b"a OK Begin TLS negotiation now"])
        self.assertNotIn(b"b ", after)
        self.assertTrue(after.startswith(b"c OK"), after)

    async def test_wrongPassword(self):
        """
        A wrong password gets NO [AUTHENTICATIONFAILED] (RFC 5530); too
        many close the connection.
        """
        def session():
            client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"],
                                       ssl_context=self.tls(), timeout=20)
            errors = []
            for _ in range(3):
                try:
                    client.login(ALICE, "wrong")
                except imaplib.IMAP4.error as e:
                    errors.append(str(e))
                except imaplib.IMAP4.abort as e:
                    errors.append("abort " + str(e))
            return errors

        errors = await self.in_thread(session)
        self.assertIn("[AUTHENTICATIONFAILED]", errors[0])

    async def test_authenticatePlainWithInitialResponse(self):
        """
        RFC 4959 SASL-IR: AUTHENTICATE PLAIN with the response on the line.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            token = b"AGFsaWNlQGV4YW1wbGUub3JnAHdvbmRlcmxhbmQ="
            raw.send(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
            lines = raw.until_tagged(b"a")
            raw.close()
            return lines

        lines = await self.in_thread(session)
        self.assertRegex(lines[-1], rb"^a OK \[CAPABILITY IMAP4rev1 .*\] Logged in$")


class MailboxTests(IMAPTestCase):
    async def test_fetchDeliveredMessageExactly(self):
        """
        A message delivered by SMTP reads back byte for byte (after the
        Return-Path and Received lines the server adds); BODY[] sets \\Seen
        and BODY.PEEK[] does not (RFC 3501 6.4.5).
        """
        await self.in_thread(self.deliver)
        await self.in_thread(self.wait_for_inbox, 1)

        def read():
            client = self.login()
            client.select("INBOX")
            _, peeked = client.fetch("1", "(FLAGS BODY.PEEK[])")
            _, fetched = client.fetch("1", "(BODY[])")
            _, flags = client.fetch("1", "(FLAGS)")
            return peeked, fetched, flags

        peeked, fetched, flags = await self.in_thread(read)
        self.assertNotIn(b"\\Seen", peeked[0][0])
        self.assertTrue(fetched[0][1].endswith(MESSAGE))
        self.assertTrue(fetched[0][1].startswith(b"Return-Path: <bob@example.org>\r\n"))
        self.assertIn(b"\\Seen", flags[0])

    async def test_maildirWithBareLineFeeds(self):
        """
        A message file stored with LF line ends (as Dovecot writes them) is
        served with CRLF (RFC 3501 2.3.4): BODY[] matches RFC822.SIZE and
        BODY[1] starts where the part starts.
        """
        crlf = (b"From: a@example.org\r\nSubject: lf\r\nContent-Type: multipart/mixed; "
                b'boundary="b"\r\n\r\n--b\r\n\r\nfirst part\r\n--b\r\n\r\nsecond\r\n--b--\r\n')
        home = user_directory(self.settings.store.path, ALICE)

        def session():
            client = self.login()
            client.select("INBOX")  # creates the Maildir
            (home / "cur" / "1700000000.M1P1.migrated:2,S").write_bytes(
                crlf.replace(b"\r\n", b"\n"))
            client.noop()
            _, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[1])")
            return data

        data = await self.in_thread(session)
        self.assertIn(b"RFC822.SIZE %d" % len(crlf), data[0][0])
        self.assertEqual(data[0][1], crlf)
        self.assertEqual(data[1][1], b"first part")

    async def test_appendFetchStoreSearch(self):
        """
        APPEND answers APPENDUID (RFC 4315); STORE and SEARCH see the flags;
        UID SEARCH answers UIDs.
        """
        def session():
            client = self.login()
            _, data = client.append("INBOX", "(\\Flagged)", None, MESSAGE)
            appended = data[0]
            client.append("INBOX", None, None, MESSAGE.replace(b"Hello there", b"Other"))
            client.select("INBOX")
            flagged = client.search(None, "FLAGGED")[1][0]
            client.store("2", "+FLAGS", "(\\Seen $Work)")
            keyword = client.search(None, "KEYWORD", "$Work")[1][0]
            subject = client.uid("SEARCH", "SUBJECT", "hello")[1][0]
            unseen = client.search(None, "UNSEEN")[1][0]
            return appended, flagged, keyword, subject, unseen

        appended, flagged, keyword, subject, unseen = await self.in_thread(session)
        self.assertRegex(appended, rb"^\[APPENDUID \d+ 1\] APPEND completed$")
        self.assertEqual(flagged, b"1")
        self.assertEqual(keyword, b"2")
        self.assertEqual(subject, b"1")
        self.assertEqual(unseen, b"1")

    async def test_copyAndMove(self):
        """
        COPY answers COPYUID (RFC 4315); MOVE sends COPYUID untagged, then
        EXPUNGE (RFC 6851 4.3).
        """
        def session():
            raw = self.raw_session(messages=3)
            raw.send(b"d COPY 1:2 Archive\r\ne MOVE 2:3 Trash\r\n")
            return raw.until_tagged(b"d"), raw.until_tagged(b"e")

        copy, move = await self.in_thread(session)
        self.assertRegex(copy[-1], rb"^d OK \[COPYUID \d+ 1:2 1:2\] COPY completed$")
        self.assertRegex(move[0], rb"^\* OK \[COPYUID \d+ 2:3 1:2\]")
        self.assertEqual(move[1:3], [b"* 3 EXPUNGE", b"* 2 EXPUNGE"])
        self.assertEqual(move[-1], b"e OK MOVE completed")

    async def test_listSpecialUseAndStatus(self):
        """
        A new user has the special-use folders (RFC 6154); LIST shows them
        with \\HasNoChildren; STATUS counts messages.
        """
        def session():
            client = self.login()
            client.append("INBOX", None, None, MESSAGE)
            listed = client.list()[1]
            client.create("Projects.2026")
            children = client.list('""', "Projects*")[1]
            status = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")[1]
            return listed, children, status

        listed, children, status = await self.in_thread(session)
        self.assertIn(b'(\\HasNoChildren \\Sent) "." Sent', listed)
        self.assertIn(b'(\\HasNoChildren) "." INBOX', listed)
        self.assertIn(b'(\\HasChildren) "." Projects', children)
        self.assertIn(b'(\\HasNoChildren) "." Projects.2026', children)
        self.assertEqual(status, [b"INBOX (MESSAGES 1 UNSEEN 1 UIDNEXT 2)"])

    async def test_recent(self):
        """
        RFC 3501 2.3.2: a new message is \\Recent in the first session that
        selects the folder only; STATUS counts it until then.
        """
        def session():
            first, second = self.login(), self.login()
            first.append("INBOX", None, None, MESSAGE)
            status = first.status("INBOX", "(RECENT)")[1]
            first.select("INBOX")
            recent_first = first.untagged_responses.get("RECENT")
            second.select("INBOX")
            return status, recent_first, second.untagged_responses.get("RECENT"), \
                second.status("INBOX", "(RECENT)")[1]

        status, recent_first, recent_second, status_after = await self.in_thread(session)
        self.assertEqual(status, [b"INBOX (RECENT 1)"])
        self.assertEqual(recent_first, [b"1"])
        self.assertEqual(recent_second, [b"0"])
        self.assertEqual(status_after, [b"INBOX (RECENT 0)"])

    async def test_expungeSeenByOtherSession(self):
        """
        RFC 3501 7.4.1: an EXPUNGE in one session reaches the other at its
        next NOOP, with the sequence number it knows.
        """
        def session():
            first, second = self.login(), self.login()
            for _ in range(3):
                first.append("INBOX", None, None, MESSAGE)
            first.select("INBOX")
            second.select("INBOX")
            second.store("2", "+FLAGS", "\\Deleted")
            second.expunge()
            first.noop()
            return first.untagged_responses.get("EXPUNGE"), first.fetch("2", "(UID)")[1]

        expunged, fetched = await self.in_thread(session)
        self.assertEqual(expunged, [b"2"])
        self.assertEqual(fetched, [b"2 (UID 3)"])

    async def test_idleSeesDelivery(self):
        """
        RFC 2177: a message delivered by SMTP reaches an idling session.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a LOGIN alice@example.org wonderland\r\nb SELECT INBOX\r\nc IDLE\r\n")
            raw.until_tagged(b"b")
            self.assertEqual(raw.line(), b"+ idling")
            self.deliver()
            started = time.monotonic()
            lines = [raw.line(), raw.line()]
            waited = time.monotonic() - started
            raw.send(b"DONE\r\n")
            lines += raw.until_tagged(b"c")
            raw.close()
            return lines, waited

        lines, waited = await self.in_thread(session)
        self.assertEqual(lines[:2], [b"* 1 EXISTS", b"* 1 RECENT"])
        self.assertEqual(lines[-1], b"c OK IDLE terminated")
        self.assertLess(waited, 5)


class LimitTests(IMAPTestCase):
    config = ("[limits]\nmax_message_size = 1000\nmax_command_length = 200\n"
              "max_connections_per_user = 2\n")

    async def test_sessionsPerUser(self):
        """
        A third session of one user is refused with NO [LIMIT] (RFC 5530);
        once one ends, a new one may log in; other users are not counted.
        """
        def session():
            first, _ = self.login(), self.login()
            try:
                self.login()
            except imaplib.IMAP4.error as e:
                refused = str(e)
            else:
                refused = None
            self.login(BOB)
            first.logout()
            time.sleep(0.2)
            self.login()
            return refused

        refused = await self.in_thread(session)
        self.assertIn("[LIMIT]", refused)

    async def test_appendTooBig(self):
        """
        An APPEND over the size limit is refused before the literal is sent
        ([TOOBIG], RFC 5530); the session goes on.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a LOGIN alice@example.org wonderland\r\n")
            raw.until_tagged(b"a")
            raw.send(b"b APPEND INBOX {5000}\r\n")
            refused = raw.until_tagged(b"b")
            raw.send(b"c NOOP\r\n")
            after = raw.until_tagged(b"c")
            raw.close()
            return refused, after

        refused, after = await self.in_thread(session)
        self.assertTrue(refused[-1].startswith(b"b NO [TOOBIG]"), refused)
        self.assertEqual(after[-1], b"c OK NOOP completed")

    async def test_lineTooLong(self):
        """
        A command line over max_command_length is answered BAD with its
        tag, and the next command works.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a NOOP " + b"x" * 300 + b"\r\nb NOOP\r\n")
            lines = raw.until_tagged(b"b")
            raw.close()
            return lines

        lines = await self.in_thread(session)
        self.assertTrue(lines[0].startswith(b"a BAD Line too long"), lines)
        self.assertEqual(lines[-1], b"b OK NOOP completed")



class ExactResponseTests(IMAPTestCase):
    """
    The responses clients get wrong most easily, compared line by line.
    """

    async def test_expungeReachesIdlingSession(self):
        """
        RFC 2177 and RFC 3501 7.4.1: an EXPUNGE made by another session is
        told to an idling one at once, with its sequence number.
        """
        def session():
            idler = self.raw_session(messages=3, flags=b"\\Deleted")
            idler.send(b"i IDLE\r\n")
            idling = idler.line()
            other = self.raw_session()
            other.send(b"e UID EXPUNGE 2\r\n")
            other_lines = other.until_tagged(b"e")
            told = idler.line()
            idler.send(b"DONE\r\n")
            return idling, other_lines, told, idler.until_tagged(b"i")

        idling, other_lines, told, done = await self.in_thread(session)
        self.assertEqual(idling, b"+ idling")
        self.assertEqual(other_lines, [b"* 2 EXPUNGE", b"e OK EXPUNGE completed"])
        self.assertEqual(told, b"* 2 EXPUNGE")
        self.assertEqual(done, [b"i OK IDLE terminated"])

    async def test_uidExpungeOnlyTheGivenUIDs(self):
        """
        RFC 4315 2.1: UID EXPUNGE removes only the \\Deleted messages of the
        set; the EXPUNGE responses renumber as they go.
        """
        def session():
            raw = self.raw_session(messages=4, flags=b"\\Deleted")
            raw.send(b"e UID EXPUNGE 2:3\r\nf FETCH 1:* (UID)\r\n")
            return raw.until_tagged(b"e"), raw.until_tagged(b"f")

        expunged, fetched = await self.in_thread(session)
        self.assertEqual(expunged, [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"e OK EXPUNGE completed"])
        self.assertEqual(fetched, [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 4)",
                                   b"f OK FETCH completed"])

    async def test_copyUIDRanges(self):
        """
        RFC 4315 3: COPYUID names the source and destination UIDs as
        compact sets, in matching order.
        """
        def session():
            raw = self.raw_session(messages=4, flags=b"\\Deleted")
            raw.send(b"c UID COPY 1,3:4 Archive\r\n")
            return raw.until_tagged(b"c")

        [copied] = await self.in_thread(session)
        self.assertRegex(copied, rb"^c OK \[COPYUID \d+ 1,3:4 1:3\] COPY completed$")

    async def test_noExpungeDuringFetchBySequence(self):
        """
        RFC 3501 7.4.1: an expunge made elsewhere is not told while
        answering FETCH by sequence number, but at the next NOOP.  What is
        still known of the gone message is given (RFC 2180 4.1.1); what
        would need its file gets NO [EXPUNGEISSUED] (RFC 5530).
        """
        def session():
            first = self.raw_session(messages=3, flags=b"\\Deleted")
            other = self.raw_session()
            other.send(b"e UID EXPUNGE 1\r\n")
            other.until_tagged(b"e")
            time.sleep(0.3)  # the change notice reaches the first session
            first.send(b"f FETCH 1:3 (UID)\r\ng FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
                       b"\r\nn NOOP\r\n")
            return first.until_tagged(b"f"), first.until_tagged(b"g"), first.until_tagged(b"n")

        fetched, headers, noop = await self.in_thread(session)
        self.assertEqual(fetched, [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)",
                                   b"* 3 FETCH (UID 3)", b"f OK FETCH completed"])
        self.assertEqual(headers, [
            b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {24}", b"Subject: Hello there",
            b"", b")", b"g NO [EXPUNGEISSUED] Some of the messages no longer exist"])
        self.assertEqual(noop, [b"* 1 EXPUNGE", b"n OK NOOP completed"])


    async def test_sections(self):
        """
        RFC 3501 6.4.5: header sections, TEXT and part sections of a message
        stored with LF line ends, served with CRLF (2.3.4); whether a FETCH
        needs only the header block or the whole MIME outline, the same
        bytes come back.
        """
        message = (b"Subject: Sections\nFrom: a@example.org\n"
                   b"Content-Type: multipart/mixed; boundary=b\n\n"
                   b"--b\nContent-Type: text/plain\n\none\n--b--\n")

        def session():
            raw = self.raw_session(messages=1, message=message)
            raw.send(b"f FETCH 1 (RFC822.HEADER BODY.PEEK[HEADER.FIELDS.NOT (FROM CONTENT-TYPE)]"
                     b" BODY.PEEK[TEXT]<0.3>)\r\n"
                     b"g FETCH 1 (BODY.PEEK[1.MIME] BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
                     b" BODY.PEEK[TEXT])\r\n")
            return b"\r\n".join(raw.until_tagged(b"f")), b"\r\n".join(raw.until_tagged(b"g"))

        header_only, with_outline = await self.in_thread(session)
        header = (b"Subject: Sections\r\nFrom: a@example.org\r\n"
                  b"Content-Type: multipart/mixed; boundary=b\r\n\r\n")
        text = b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b--\r\n"
        self.assertEqual(header_only, b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s"
                         b" BODY[HEADER.FIELDS.NOT (FROM CONTENT-TYPE)] {21}\r\n"
                         b"Subject: Sections\r\n\r\n BODY[TEXT]<0> {3}\r\n--b)\r\n"
                         b"f OK FETCH completed" % (len(header), header))
        self.assertEqual(with_outline, b"* 1 FETCH (BODY[1.MIME] {28}\r\n"
                         b"Content-Type: text/plain\r\n\r\n BODY[1] {3}\r\none"
                         b" BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: Sections\r\n\r\n"
                         b" BODY[TEXT] {%d}\r\n%s)\r\ng OK FETCH completed" % (len(text), text))


class BackPressureTests(IMAPTestCase):
    async def test_slowReaderPausesFetch(self):
        """
        A client that does not read a big FETCH makes the server stop
        reading messages from disk, instead of buffering the whole folder;
        once it reads, everything arrives.
        """
        reads = []
        real = MaildirUserStore.read_messages
        self.patch(MaildirUserStore, "read_messages",
                   lambda store, name, uids: reads.append(len(uids)) or real(store, name, uids))
        big = MESSAGE + b"y" * 1_000_000 + b"\r\n"

        def session():
            raw = self.raw_session(messages=40, message=big)
            raw.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
            time.sleep(1.5)
            while_paused = list(reads)
            received = 0
            while True:
                chunk = raw.sock.recv(1 << 20)
                received += len(chunk)
                if b"f OK FETCH completed\r\n" in chunk[-64:]:
                    break
            raw.close()
            return while_paused, received

        while_paused, received = await self.in_thread(session)
        self.assertLess(sum(while_paused), 40)
        self.assertEqual(sum(reads), 40)
        self.assertGreater(received, 40 * len(big))
