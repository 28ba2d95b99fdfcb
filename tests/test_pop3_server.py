"""
End-to-end tests of the POP3 server with Python's poplib, over STLS and
implicit TLS, against the real listeners of an in-process server; mail
arrives by SMTP and IMAP looks at the same INBOX.
"""

from __future__ import annotations

import base64
import poplib
import socket
import time

from mailsrv.pop3 import server
from mailsrv.store.maildir import MaildirUserStore
from tests.test_imap_server import ALICE, PASSWORD, IMAPTestCase, Raw

#: A line starting with ".", a base64 attachment and 998-octet lines.
ATTACHMENT = base64.encodebytes(bytes(range(256)) * 40).replace(b"\n", b"\r\n")
MESSAGE = (b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.org>\r\n"
           b"Subject: For POP3\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\n"
           b".a line starting with a dot\r\n..two dots\r\n.\r\n" + b"y" * 998 + b"\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + ATTACHMENT + b"--b--\r\n")


class POP3TestCase(IMAPTestCase):
    roles = ("smtp", "imap", "imaps", "pop3", "pop3s")

    def pop(self, implicit: bool = True, login: bool = True) -> poplib.POP3:
        if implicit:
            client = poplib.POP3_SSL("127.0.0.1", self.ports["pop3s"], context=self.tls(),
                                     timeout=20)
        else:
            client = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=20)
        if login:
            if not implicit:
                client.stls(self.tls())
            client.user(ALICE)
            client.pass_(PASSWORD)
        return client

    def delivered(self, count: int, message: bytes = MESSAGE) -> bytes:
        """
        Deliver C{message} by SMTP C{count} times; the first as stored (with
        the trace fields SMTP added), from IMAP.
        """
        for _ in range(count):
            self.deliver(message)
        self.wait_for_inbox(count)
        imap = self.login()
        imap.select("INBOX", readonly=True)
        stored = imap.fetch("1", "(BODY.PEEK[])")[1][0][1]
        self.assertTrue(stored.endswith(message))
        return stored


def retrieved(client: poplib.POP3, number: int) -> bytes:
    """
    A message as RETR gives it, its lines joined again (poplib removes the
    dot-stuffing).
    """
    _, lines, _ = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


class RetrieveTests(POP3TestCase):
    async def test_byteExactOverSTLS(self):
        """
        RFC 1939 7: a message delivered by SMTP comes back byte for byte by
        RETR after STLS (RFC 2595), its "." lines stuffed and unstuffed,
        STAT and LIST giving its size.
        """
        def session():
            stored = self.delivered(1)
            client = self.pop(implicit=False)
            try:
                return stored, client.stat(), client.list(), retrieved(client, 1), client.quit()
            finally:
                client.close()

        stored, stat, listing, data, quit = await self.in_thread(session)
        self.assertEqual(data, stored)
        self.assertEqual(stat, (1, len(stored)))
        self.assertEqual(listing[1], [b"1 %d" % len(stored)])
        self.assertTrue(quit.startswith(b"+OK"))

    async def test_largeMessageInChunks(self):
        """
        A message larger than WHOLE is read in CHUNK pieces: lines starting
        with "." right at the chunk boundaries are still stuffed, RETR and
        TOP give the same bytes as a small message would.
        """
        # 65536 % 3 == 1: chunk boundaries fall before, inside and after
        # the "." of such lines in turn.
        line = b".\r\n"
        large = b"Subject: large\r\n\r\n" + line * (server.WHOLE // len(line) + 30000)

        def session():
            stored = self.delivered(1, large)
            client = self.pop()
            try:
                return stored, retrieved(client, 1), client.top(1, 3)[1]
            finally:
                client.quit()

        stored, data, top = await self.in_thread(session)
        self.assertGreater(len(stored), server.WHOLE)
        self.assertEqual(data, stored)
        header = stored.split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(top, [*header, b"", *[line.rstrip(b"\r\n")] * 3])

    async def test_pipelinedRetrsWaitForTheReader(self):
        """
        RFC 2449 6.6 PIPELINING: RETRs sent at once to a client that does not
        read are answered only as it reads, not read from disk all at once
        into the server's memory; once it reads, everything arrives.
        """
        reads = []
        real = MaildirUserStore.read_messages
        self.patch(MaildirUserStore, "read_messages",
                   lambda store, name, uids: reads.append(len(uids)) or real(store, name, uids))
        big = MESSAGE + b"y" * 500_000 + b"\r\n"

        def session():
            self.raw_session(messages=40, message=big).close()
            client = self.pop()
            client.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in range(1, 41)))
            time.sleep(1.5)
            while_paused = sum(reads)
            received, ends, tail = 0, 0, b""
            while ends < 40:
                chunk = tail + client.sock.recv(1 << 20)
                ends += chunk.count(b"\r\n.\r\n")
                received += len(chunk) - len(tail)
                tail = chunk[-4:]  # an end split between two reads is counted once
            client.quit()
            return while_paused, received

        while_paused, received = await self.in_thread(session)
        self.assertLess(while_paused, 40)
        self.assertEqual(sum(reads), 40)
        self.assertGreater(received, 40 * len(big))

    async def test_implicitTLSWithSASL(self):
        """
        RFC 5034: AUTH PLAIN with an initial response, and without one (the
        "+ " continuation), on the implicit TLS listener (RFC 8314).
        """
        token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()

        def session():
            replies = [self.delivered(1)]
            for command in (f"AUTH PLAIN {token}", "AUTH PLAIN"):
                client = self.pop(login=False)
                if command == "AUTH PLAIN":
                    client._putcmd(command)
                    replies.append(client._getresp())
                    replies.append(client._shortcmd(token))
                else:
                    replies.append(client._shortcmd(command))
                replies.append(retrieved(client, 1))
                client.quit()
            return replies

        stored, first, data, continuation, second, again = await self.in_thread(session)
        self.assertEqual((first, continuation, second),
                         (b"+OK 1 messages", b"+ ", b"+OK 1 messages"))
        self.assertEqual((data, again), (stored, stored))

    async def test_top(self):
        """
        RFC 1939 7: TOP gives the header, the blank line and so many lines
        of the body, stuffed.
        """
        def session():
            stored = self.delivered(1)
            client = self.pop()
            try:
                return stored, client.top(1, 2)[1]
            finally:
                client.quit()

        stored, lines = await self.in_thread(session)
        header = stored.split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(lines, [*header, b"", b"--b", b"Content-Type: text/plain"])

    async def test_uidlIsStableAndAgreesWithIMAP(self):
        """
        RFC 1939 7 UIDL: unique, the same in every session; made of the IMAP
        UID and UIDVALIDITY as Dovecot makes it (%08Xu%08Xv).
        """
        def session():
            self.delivered(2)
            imap = self.login()
            imap.select("INBOX")
            validity = int(imap.response("UIDVALIDITY")[1][0])
            uids = [int(u) for u in imap.uid("SEARCH", "ALL")[1][0].split()]
            listings = []
            for _ in range(2):
                client = self.pop()
                listings.append(client.uidl()[1])
                client.quit()
            return validity, uids, listings

        validity, uids, (first, second) = await self.in_thread(session)
        self.assertEqual(first, second)
        self.assertEqual(first, [b"%d %08X%08X" % (n, uid, validity)
                                 for n, uid in enumerate(uids, 1)])


class UpdateStateTests(POP3TestCase):
    async def test_deletedOnlyAtQuit(self):
        """
        RFC 1939 6: DELE only marks; a dropped connection deletes nothing,
        QUIT deletes; DELE 0 and a second DELE of a message are errors, and
        message numbers do not change within the session.
        """
        def session():
            self.delivered(3)
            client = self.pop()
            client.dele(2)
            client.close()  # dropped, no QUIT
            time.sleep(0.2)
            client = self.pop()
            errors = []
            for command in ("DELE 0", "DELE 4", "DELE x"):
                try:
                    client._shortcmd(command)
                except poplib.error_proto as e:
                    errors.append(e.args[0])
            client.dele(2)
            try:
                client.dele(2)
            except poplib.error_proto as e:
                errors.append(e.args[0])
            stat, listing = client.stat(), client.list()[1]
            rset = client.rset()
            client.dele(1)
            quit = client.quit()
            client = self.pop()
            after = client.stat()
            client.quit()
            return errors, stat, listing, rset, quit, after

        errors, stat, listing, rset, quit, after = await self.in_thread(session)
        self.assertEqual(errors, [b"-ERR No such message"] * 3 + [b"-ERR Message is deleted"])
        self.assertEqual(stat[0], 2)
        self.assertEqual([line.split()[0] for line in listing], [b"1", b"3"])
        self.assertEqual(rset, b"+OK 3 messages")
        self.assertEqual(quit, b"+OK Bye, 1 messages deleted")
        self.assertEqual(after[0], 2)

    async def test_maildropIsTheInboxAtLogin(self):
        """
        RFC 1939 4: the maildrop is what the INBOX held at login; mail that
        arrives later waits for the next session, and a message removed
        meanwhile by IMAP cannot be retrieved (-ERR, the session goes on).
        """
        def session():
            self.delivered(2)
            client = self.pop()
            self.deliver()
            time.sleep(0.3)
            imap = self.login()
            imap.select("INBOX")
            imap.store("1", "+FLAGS", "\\Deleted")
            imap.expunge()
            stat, noop = client.stat(), client.noop()
            try:
                client.retr(1)
            except poplib.error_proto as e:
                gone = e.args[0]
            second = retrieved(client, 2)
            client.quit()
            again = self.pop()
            count = again.stat()[0]
            again.quit()
            return stat[0], noop, gone, second, count

        stat, noop, gone, second, count = await self.in_thread(session)
        self.assertEqual((stat, noop, count), (2, b"+OK", 2))
        self.assertEqual(gone, b"-ERR The message was removed by another session")
        self.assertTrue(second.endswith(MESSAGE))

    async def test_retrievedMarkedSeen(self):
        """
        Messages retrieved are \\Seen in the store at QUIT: IMAP sees it.
        """
        def session():
            self.delivered(2)
            client = self.pop()
            client.retr(2)
            client.quit()
            imap = self.login()
            imap.select("INBOX")
            return imap.fetch("1:2", "(FLAGS)")[1]

        flags = await self.in_thread(session)
        self.assertNotIn(b"\\Seen", flags[0])
        self.assertIn(b"\\Seen", flags[1])

    async def test_secondSessionInUse(self):
        """
        RFC 2449 8.1.1: a second session for the maildrop gets [IN-USE]; an
        IMAP session works beside it; once the first is gone, POP3 works.
        """
        def session():
            self.delivered(1)
            first = self.pop()
            try:
                self.pop()
            except poplib.error_proto as e:
                refused = e.args[0]
            imap = self.login()
            imap_count = imap.select("INBOX")[1][0]
            first.quit()
            again = self.pop()
            count = again.stat()[0]
            again.quit()
            return refused, imap_count, count

        refused, imap_count, count = await self.in_thread(session)
        self.assertEqual(refused, b"-ERR [IN-USE] Another POP3 session is using this maildrop")
        self.assertEqual((imap_count, count), (b"1", 1))


class AuthorizationTests(POP3TestCase):
    async def test_capabilitiesBeforeAndAfterSTLS(self):
        """
        RFC 2449 CAPA lists what is offered: before TLS no way to log in but
        STLS; after it USER and SASL PLAIN, no STLS; USER before TLS is
        refused with [AUTH] (RFC 3206, RFC 2595 3).
        """
        def session():
            client = self.pop(implicit=False, login=False)
            before = client.capa()
            refused = []
            for attempt in (lambda: client.user(ALICE),
                            lambda: client._shortcmd("AUTH PLAIN AGFsaWNlAHg=")):
                try:
                    attempt()
                except poplib.error_proto as e:
                    refused.append(e.args[0])
            client.stls(self.tls())
            after = client.capa()
            client.quit()
            return before, refused, after

        before, refused, after = await self.in_thread(session)
        self.assertEqual(refused[1], b"-ERR [AUTH] Authenticate after STLS")
        refused = refused[0]
        self.assertIn("STLS", before)
        self.assertNotIn("USER", before)
        self.assertNotIn("SASL", before)
        self.assertEqual(refused, b"-ERR [AUTH] Log in after STLS")
        self.assertEqual(after["SASL"], ["PLAIN"])
        self.assertIn("USER", after)
        self.assertNotIn("STLS", after)
        for capability in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                           "IMPLEMENTATION"):
            self.assertIn(capability, after)

    async def test_pipelinedAfterSTLSDiscarded(self):
        """
        RFC 2595 4: what the client sent after STLS, before the handshake,
        is not run.
        """
        def session():
            raw = Raw(self.ports["pop3"])
            raw.send(b"STLS\r\nUSER injected\r\n")
            started = raw.line()
            raw.sock = self.tls().wrap_socket(raw.sock, server_hostname="localhost")
            raw.send(b"PASS wonderland\r\n")
            reply = raw.line()
            raw.close()
            return started, reply

        started, reply = await self.in_thread(session)
        self.assertEqual(started, b"+OK Begin TLS negotiation")
        self.assertEqual(reply, b"-ERR Send USER first")

    async def test_failedLoginsClose(self):
        """
        After max_auth_failures wrong passwords the session is closed.
        """
        def session():
            client = self.pop(login=False)
            replies = []
            for _ in range(3):
                client.user(ALICE)
                try:
                    client.pass_("wrong")
                except poplib.error_proto as e:
                    replies.append(e.args[0])
            replies.append(client.sock.recv(100))
            return replies

        replies = await self.in_thread(session)
        self.assertEqual(replies[:2], [b"-ERR [AUTH] Authentication failed"] * 2)
        self.assertTrue(replies[2].startswith(b"-ERR [AUTH]"))
        self.assertEqual(replies[3], b"")

    async def test_commandsNeedTheRightState(self):
        def session():
            client = self.pop(login=False)
            replies = []
            for command in ("STAT", "RETR 1", "PASS x", "NOSUCH", "USER"):
                try:
                    replies.append(client._shortcmd(command))
                except poplib.error_proto as e:
                    replies.append(e.args[0])
            client.quit()
            return replies

        self.assertEqual(await self.in_thread(session), [
            b"-ERR Log in first", b"-ERR Log in first", b"-ERR Send USER first",
            b"-ERR Unknown command", b"-ERR USER needs a name"])

    async def test_longLineCloses(self):
        def session():
            with socket.create_connection(("127.0.0.1", self.ports["pop3"]), timeout=10) as sock:
                sock.recv(100)
                sock.sendall(b"NOOP " + b"x" * 2000 + b"\r\n")
                data = b""
                while chunk := sock.recv(100):
                    data += chunk
                return data

        self.assertEqual(await self.in_thread(session), b"-ERR Line too long\r\n")


class LimitTests(POP3TestCase):
    config = "[limits]\nmax_connections_per_ip = 2\nidle_timeout = 1\ncommand_timeout = 2\n"

    async def test_loginTimeout(self):
        """
        A client that does not log in within command_timeout is told and
        disconnected.
        """
        def session():
            with socket.create_connection(("127.0.0.1", self.ports["pop3"]), timeout=20) as sock:
                data = b""
                while chunk := sock.recv(100):
                    data += chunk
                return data

        self.assertEqual(await self.in_thread(session),
                         b"+OK mailsrv POP3 ready\r\n-ERR Idle for too long, closing\r\n")

    async def test_connectionsPerAddress(self):
        """
        A connection over max_connections_per_ip is told why and closed
        (RFC 3206 SYS/TEMP); once one closes, another is accepted.
        """
        def session():
            first = self.pop(login=False)
            second = self.pop(login=False)
            with socket.create_connection(("127.0.0.1", self.ports["pop3"]), timeout=10) as sock:
                refused = b""
                while chunk := sock.recv(100):
                    refused += chunk
            first.quit()
            second.quit()
            time.sleep(0.2)
            third = self.pop()
            third.quit()
            return refused

        self.assertEqual(await self.in_thread(session),
                         b"-ERR [SYS/TEMP] Too many connections, try again later\r\n")

    async def test_idleSessionClosed(self):
        """
        A logged-in session idle past idle_timeout is closed, deleting
        nothing (RFC 1939 3: the autologout timer).
        """
        def session():
            self.delivered(1)
            client = self.pop()
            client.dele(1)
            told = b""
            while chunk := client.sock.recv(100):  # until the server closes (socket timeout 20 s)
                told += chunk
            client.close()
            after = self.pop()
            count = after.stat()[0]
            after.quit()
            return told, count

        told, count = await self.in_thread(session)
        self.assertEqual(told, b"-ERR Idle for too long, closing\r\n")
        self.assertEqual(count, 1)
