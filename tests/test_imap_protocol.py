"""
End-to-end tests of the IMAP protocol level: capabilities, NOOP, LOGOUT,
ID, ENABLE, IDLE, literals, AUTHENTICATE, STARTTLS, malformed commands and
the limits (login throttling, failures, errors, connections, autologout),
on bare sockets against the real listeners of an in-process server.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import time

from twisted.internet.task import Clock

from mailsrv import service as service_module
from mailsrv.cred.throttle import LoginThrottle
from mailsrv.imap.server import IMAPServer
from tests.test_imap_server import ALICE, BOB, PASSWORD, IMAPTestCase, Raw

#: What every state offers, and what only a logged-in session does.
BASE = {"IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"}
LOGGED_IN = BASE | {"UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE", "CHILDREN"}

LOGIN = b"LOGIN alice@example.org wonderland"


def plain(authzid: str, user: str, password: str) -> bytes:
    """A SASL PLAIN response (RFC 4616 2), base64-encoded."""
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


def capabilities(line: bytes) -> set[str]:
    """The capability names of a CAPABILITY response or response code."""
    match = re.search(rb"CAPABILITY ([^\]]*)", line)
    assert match is not None, line
    return set(match[1].decode().split())


def until_eof(raw: Raw) -> list[bytes]:
    """Every line until the server closes the connection (10 s socket timeout)."""
    lines = []
    while True:
        try:
            lines.append(raw.line())
        except (EOFError, ssl.SSLEOFError, ConnectionResetError):
            return lines


def command(raw: Raw, tag: bytes, text: bytes) -> list[bytes]:
    """Send one command and read its responses up to the tagged one."""
    raw.send(tag + b" " + text + b"\r\n")
    return raw.until_tagged(tag)


class RawFrom(Raw):
    """
    A bare socket to the plain IMAP port from another loopback address
    (127.0.0.0/8), to count connections per client address.
    """

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.buffer = b""
        self.greeting = self.line()


class CapabilityTests(IMAPTestCase):
    async def test_beforeTLS(self):
        """
        RFC 3501 6.1.1, 6.2.1, 7.2.1 and 7.1 (CAPABILITY response code):
        before TLS on the plain port the greeting and CAPABILITY give the
        same list, with STARTTLS and LOGINDISABLED and no AUTH= mechanism;
        AUTHENTICATE PLAIN, not offered, is refused with NO (6.2.2).
        """
        def session():
            raw = Raw(self.ports["imap"])
            lines = command(raw, b"a", b"CAPABILITY")
            auth = command(raw, b"b", b"AUTHENTICATE PLAIN " + plain("", ALICE, PASSWORD))
            raw.close()
            return raw.greeting, lines, auth

        greeting, lines, auth = await self.in_thread(session)
        self.assertEqual(len(auth), 1, auth)
        self.assertTrue(auth[0].startswith(b"b NO "), auth)
        self.assertRegex(greeting, rb"^\* OK \[CAPABILITY [^\]]+\] ")
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith(b"* CAPABILITY "), lines)
        self.assertEqual(lines[1], b"a OK CAPABILITY completed")
        expected = BASE | {"STARTTLS", "LOGINDISABLED"}
        self.assertEqual(capabilities(lines[0]), expected)
        self.assertEqual(capabilities(greeting), expected)

    async def test_afterStartTLSAndLogin(self):
        """
        RFC 3501 6.2.1 and 7.2.1: after STARTTLS the list has AUTH=PLAIN and
        neither STARTTLS nor LOGINDISABLED; the tagged OK of LOGIN carries a
        [CAPABILITY] code equal to what CAPABILITY then says, which names
        every extension the server implements (IDLE RFC 2177, UIDPLUS RFC
        4315, MOVE RFC 6851, UNSELECT RFC 3691, ENABLE RFC 5161, ID RFC
        2971, NAMESPACE RFC 2342, SPECIAL-USE RFC 6154, CHILDREN RFC 3348,
        LITERAL+ RFC 7888, SASL-IR RFC 4959).  NAMESPACE answers the one
        personal namespace (RFC 2342 5).
        """
        def session():
            raw = Raw(self.ports["imap"])
            self.assertEqual(command(raw, b"a", b"STARTTLS"), [b"a OK Begin TLS negotiation now"])
            raw.sock = self.tls().wrap_socket(raw.sock, server_hostname="localhost")
            before = command(raw, b"b", b"CAPABILITY")
            login = command(raw, b"c", LOGIN)
            after = command(raw, b"d", b"CAPABILITY")
            namespace = command(raw, b"e", b"NAMESPACE")
            raw.close()
            return before, login, after, namespace

        before, login, after, namespace = await self.in_thread(session)
        self.assertEqual(capabilities(before[0]), BASE | {"AUTH=PLAIN"})
        self.assertEqual(len(login), 1)
        self.assertRegex(login[0], rb"^c OK \[CAPABILITY [^\]]+\] ")
        self.assertEqual(capabilities(login[0]), LOGGED_IN)
        self.assertEqual(capabilities(after[0]), LOGGED_IN)
        self.assertEqual(after[1], b"d OK CAPABILITY completed")
        self.assertEqual(namespace, [b'* NAMESPACE (("" ".")) NIL NIL',
                                     b"e OK NAMESPACE completed"])

    async def test_implicitTLS(self):
        """
        RFC 8314 and RFC 3501 7.2.1: on the implicit-TLS port the greeting
        offers AUTH=PLAIN and no STARTTLS; a successful AUTHENTICATE too
        answers with a [CAPABILITY] code (RFC 3501 6.2.2).
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            lines = command(raw, b"a", b"CAPABILITY")
            auth = command(raw, b"b", b"AUTHENTICATE PLAIN " + plain("", ALICE, PASSWORD))
            raw.close()
            return raw.greeting, lines, auth

        greeting, lines, auth = await self.in_thread(session)
        self.assertEqual(capabilities(greeting), BASE | {"AUTH=PLAIN"})
        self.assertEqual(capabilities(lines[0]), BASE | {"AUTH=PLAIN"})
        self.assertEqual(len(auth), 1)
        self.assertRegex(auth[0], rb"^b OK \[CAPABILITY [^\]]+\] ")
        self.assertEqual(capabilities(auth[0]), LOGGED_IN)


class AnyStateTests(IMAPTestCase):
    async def test_noopAndLogout(self):
        """
        RFC 3501 6.1.2 and 6.1.3: NOOP answers OK in any state; LOGOUT sends
        an untagged BYE, then the tagged OK, then the server closes the
        connection, without running a command pipelined after it.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            before = command(raw, b"a", b"NOOP")
            raw.send(b"b " + LOGIN + b"\r\nc SELECT INBOX\r\n")
            raw.until_tagged(b"c")
            selected = command(raw, b"d", b"NOOP")
            raw.send(b"e LOGOUT\r\nf NOOP\r\n")
            return before, selected, until_eof(raw)

        before, selected, logout = await self.in_thread(session)
        self.assertEqual(before, [b"a OK NOOP completed"])
        self.assertEqual(selected, [b"d OK NOOP completed"])
        self.assertEqual(len(logout), 2, logout)
        self.assertRegex(logout[0], rb"^\* BYE ")
        self.assertEqual(logout[1], b"e OK LOGOUT completed")

    async def test_id(self):
        """
        RFC 2971 3.1 to 3.3: ID is valid in any state; the server always
        answers with an untagged ID (a list of at most 30 field-value
        strings, fields up to 30 octets) for NIL, a list and the empty
        list; malformed arguments get BAD with the tag.
        """
        def session():
            raw = Raw(self.ports["imap"])
            answers = [command(raw, b"a", b"ID NIL"),
                       command(raw, b"b", b'ID ("name" "trial" "version" NIL)'),
                       command(raw, b"c", b"ID ()")]
            command(raw, b"d", b"STARTTLS")
            raw.sock = self.tls().wrap_socket(raw.sock, server_hostname="localhost")
            command(raw, b"e", LOGIN)
            answers.append(command(raw, b"f", b"ID NIL"))
            bad = [command(raw, b"g", b"ID"), command(raw, b"h", b"ID foo"),
                   command(raw, b"i", b'ID ("name")'), command(raw, b"j", b'ID ("name" "x"')]
            raw.close()
            return answers, bad

        answers, bad = await self.in_thread(session)
        identity = answers[0][0]
        match = re.fullmatch(rb'\* ID \(((?:"[^"\\]*" (?:"[^"\\]*"|NIL) ?)+)\)', identity)
        self.assertIsNotNone(match, identity)
        fields = re.findall(rb'"([^"]*)" (?:"[^"]*"|NIL)', match[1])
        self.assertIn(b"name", fields)
        self.assertLessEqual(len(fields), 30)
        self.assertTrue(all(len(f) <= 30 for f in fields))
        for tag, lines in zip(b"abcf", answers, strict=True):
            self.assertEqual(lines, [identity, bytes([tag]) + b" OK ID completed"])
        for tag, lines in zip(b"ghij", bad, strict=True):
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(bytes([tag]) + b" BAD "), lines)

    async def test_enable(self):
        """
        RFC 5161 3.1 and 3.2: ENABLE is valid only once authenticated
        (refused with BAD or NO before, RFC 3501 3); capabilities the
        server does not know, or that need no enabling, are left out of
        the untagged ENABLED response, which is then empty; ENABLE
        without any capability is a syntax error.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            before = command(raw, b"a", b"ENABLE FOO")
            command(raw, b"b", LOGIN)
            after = command(raw, b"c", b"ENABLE FOO X-BAR IDLE")
            empty = command(raw, b"d", b"ENABLE")
            raw.close()
            return before, after, empty

        before, after, empty = await self.in_thread(session)
        self.assertEqual(len(before), 1, before)
        self.assertRegex(before[0], rb"^a (BAD|NO) ")
        self.assertEqual(after, [b"* ENABLED", b"c OK ENABLE completed"])
        self.assertEqual(len(empty), 1, empty)
        self.assertTrue(empty[0].startswith(b"d BAD "), empty)


class IdleTests(IMAPTestCase):
    async def test_idleAndDone(self):
        """
        RFC 2177 3: IDLE answers a "+" continuation; DONE (in any case, a
        string of the ABNF) ends it with the tagged OK; IDLE is valid
        without a selected folder; anything but DONE ends it with BAD and
        the session goes on.
        """
        def session():
            raw = self.raw_session(messages=1)
            raw.send(b"a IDLE\r\n")
            continuation = raw.line()
            raw.send(b"DONE\r\n")
            done = raw.until_tagged(b"a")
            command(raw, b"u", b"UNSELECT")
            raw.send(b"b IDLE\r\n")
            unselected = raw.line()
            raw.send(b"done\r\n")
            lower = raw.until_tagged(b"b")
            raw.send(b"c IDLE\r\n")
            raw.line()
            raw.send(b"d NOOP\r\n")
            other = raw.until_tagged(b"c")
            after = command(raw, b"e", b"NOOP")
            return continuation, done, unselected, lower, other, after

        continuation, done, unselected, lower, other, after = await self.in_thread(session)
        self.assertTrue(continuation.startswith(b"+ "), continuation)
        self.assertEqual(done, [b"a OK IDLE terminated"])
        self.assertTrue(unselected.startswith(b"+ "), unselected)
        self.assertEqual(lower, [b"b OK IDLE terminated"])
        self.assertEqual(len(other), 1, other)
        self.assertTrue(other[0].startswith(b"c BAD "), other)
        self.assertEqual(after, [b"e OK NOOP completed"])

    async def test_flagChangeReachesIdler(self):
        """
        RFC 2177 3 and RFC 3501 7.4.2: flags changed by another session are
        told at once to an idling one as an untagged FETCH with FLAGS, even
        when the other session stored them with .SILENT (RFC 3501 6.4.6:
        .SILENT concerns only the session that stores).
        """
        def session():
            idler = self.raw_session(messages=2)
            other = self.raw_session()
            idler.send(b"i IDLE\r\n")
            idler.line()
            command(other, b"s", b"STORE 2 +FLAGS (\\Flagged $Work)")
            first = idler.line()
            command(other, b"t", b"STORE 1 +FLAGS.SILENT (\\Seen)")
            second = idler.line()
            idler.send(b"DONE\r\n")
            return first, second, idler.until_tagged(b"i")

        first, second, done = await self.in_thread(session)
        self.assertEqual(first, b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent $Work))")
        self.assertEqual(second, b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))")
        self.assertEqual(done, [b"i OK IDLE terminated"])


class LiteralTests(IMAPTestCase):
    config = "[limits]\nmax_literal_size = 100\n"

    async def test_synchronizingLiteral(self):
        """
        RFC 3501 4.3 and 7.5: for a synchronizing literal "{n}" the server
        sends a "+" continuation before the client sends the data; a
        literal of exactly max_literal_size is accepted.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a LOGIN {17}\r\n")
            first = raw.line()
            raw.send(b"alice@example.org {10}\r\n")
            second = raw.line()
            raw.send(b"wonderland\r\n")
            login = raw.until_tagged(b"a")
            raw.send(b'b LIST "" {100}\r\n')
            third = raw.line()
            raw.send(b"x" * 100 + b"\r\n")
            listed = raw.until_tagged(b"b")
            raw.close()
            return first, second, login, third, listed

        first, second, login, third, listed = await self.in_thread(session)
        for continuation in (first, second, third):
            self.assertTrue(continuation.startswith(b"+ "), continuation)
        self.assertEqual(len(login), 1, login)
        self.assertTrue(login[0].startswith(b"a OK "), login)
        self.assertEqual(listed, [b"b OK LIST completed"])

    async def test_nonSynchronizingLiteral(self):
        """
        RFC 7888 3: a non-synchronizing literal "{n+}" gets no continuation:
        the data follows at once and only the command's responses come.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a LOGIN {17+}\r\nalice@example.org {10+}\r\nwonderland\r\n"
                     b'b LIST "" {100+}\r\n' + b"x" * 100 + b"\r\n")
            login = raw.until_tagged(b"a")
            listed = raw.until_tagged(b"b")
            raw.close()
            return login, listed

        login, listed = await self.in_thread(session)
        self.assertEqual(len(login), 1, login)
        self.assertTrue(login[0].startswith(b"a OK "), login)
        self.assertEqual(listed, [b"b OK LIST completed"])

    async def test_synchronizingLiteralOverLimit(self):
        """
        RFC 3501 7.5 and RFC 7888 4: a synchronizing literal over
        max_literal_size (not an APPEND) gets a tagged NO instead of "+",
        so the client sends no data, and the session goes on.
        """
        def session():
            raw = self.raw_session()
            raw.send(b'a LIST "" {101}\r\n')
            refused = raw.line()
            after = command(raw, b"b", b"NOOP")
            return refused, after

        refused, after = await self.in_thread(session)
        self.assertTrue(refused.startswith(b"a NO [TOOBIG] "), refused)
        self.assertEqual(after, [b"b OK NOOP completed"])

    async def test_nonSynchronizingLiteralOverLimit(self):
        """
        RFC 7888 4: a non-synchronizing literal over the limit is read and
        discarded (what looks like a command inside is not run) and the
        command rejected, or the connection is closed with BYE; this
        server does the former, and the session goes on.
        """
        data = (b"x\r\nz LOGOUT\r\n").ljust(200, b"y")

        def session():
            raw = self.raw_session()
            raw.send(b'a LIST "" {200+}\r\n' + data[:50])
            raw.send(data[50:] + b"\r\nb NOOP\r\n")
            return raw.until_tagged(b"b")

        lines = await self.in_thread(session)
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith(b"a NO [TOOBIG] "), lines)
        self.assertEqual(lines[1], b"b OK NOOP completed")


class AuthenticateTests(IMAPTestCase):
    async def test_plainWithContinuation(self):
        """
        RFC 3501 6.2.2 and RFC 4959 3: AUTHENTICATE PLAIN without an
        initial response gets an empty "+ " challenge, then the response.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a AUTHENTICATE PLAIN\r\n")
            challenge = raw.line()
            raw.send(plain("", ALICE, PASSWORD) + b"\r\n")
            lines = raw.until_tagged(b"a")
            selected = command(raw, b"b", b"SELECT INBOX")
            raw.close()
            return challenge, lines, selected

        challenge, lines, selected = await self.in_thread(session)
        self.assertEqual(challenge, b"+ ")
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], rb"^a OK \[CAPABILITY [^\]]+\] ")
        self.assertTrue(selected[-1].startswith(b"b OK "), selected)

    async def test_cancelAndBadBase64(self):
        """
        RFC 3501 6.2.2: a "*" line cancels the exchange with a tagged BAD;
        a response that is no base64, in a continuation or as the initial
        response (RFC 4959 3), is an invalid argument: BAD.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            raw.send(b"a AUTHENTICATE PLAIN\r\n")
            raw.line()
            raw.send(b"*\r\n")
            cancelled = raw.until_tagged(b"a")
            raw.send(b"b AUTHENTICATE PLAIN\r\n")
            raw.line()
            raw.send(b"!!not base64!!\r\n")
            continued = raw.until_tagged(b"b")
            initial = command(raw, b"c", b"AUTHENTICATE PLAIN AGFsaWNl!")
            after = command(raw, b"d", b"AUTHENTICATE PLAIN " + plain("", ALICE, PASSWORD))
            raw.close()
            return cancelled, continued, initial, after

        cancelled, continued, initial, after = await self.in_thread(session)
        for tag, lines in zip(b"abc", (cancelled, continued, initial), strict=True):
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(bytes([tag]) + b" BAD "), lines)
        self.assertTrue(after[0].startswith(b"d OK "), after)

    async def test_refusals(self):
        """
        RFC 4616 2 and RFC 5530 3: an authorization identity other than the
        user is refused with NO [AUTHORIZATIONFAILED]; a wrong password
        with NO [AUTHENTICATIONFAILED]; an unknown mechanism with NO (RFC
        3501 6.2.2).  An authzid equal to the user is accepted.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            answers = [
                command(raw, b"a", b"AUTHENTICATE PLAIN " + plain(BOB, ALICE, PASSWORD)),
                command(raw, b"b", b"AUTHENTICATE PLAIN " + plain("", ALICE, "wrong")),
                command(raw, b"c", b"AUTHENTICATE X-UNKNOWN"),
                command(raw, b"d", b"AUTHENTICATE PLAIN " + plain(ALICE, ALICE, PASSWORD)),
            ]
            raw.close()
            return answers

        authz, wrong, unknown, same = await self.in_thread(session)
        self.assertEqual(len(authz), 1, authz)
        self.assertTrue(authz[0].startswith(b"a NO [AUTHORIZATIONFAILED] "), authz)
        self.assertEqual(len(wrong), 1, wrong)
        self.assertTrue(wrong[0].startswith(b"b NO [AUTHENTICATIONFAILED] "), wrong)
        self.assertEqual(len(unknown), 1, unknown)
        self.assertTrue(unknown[0].startswith(b"c NO "), unknown)
        self.assertTrue(same[0].startswith(b"d OK "), same)


class StartTLSTests(IMAPTestCase):
    async def test_starttlsWhenAlreadyTLS(self):
        """
        RFC 3501 6.2.1: STARTTLS on a connection that already has TLS
        (implicit, or after a STARTTLS) is refused with BAD, and the
        session goes on.
        """
        def session():
            implicit = Raw(self.ports["imaps"], self.tls())
            first = command(implicit, b"a", b"STARTTLS")
            first_after = command(implicit, b"b", b"NOOP")
            implicit.close()
            raw = Raw(self.ports["imap"])
            command(raw, b"c", b"STARTTLS")
            raw.sock = self.tls().wrap_socket(raw.sock, server_hostname="localhost")
            second = command(raw, b"d", b"STARTTLS")
            second_after = command(raw, b"e", LOGIN)
            raw.close()
            return first, first_after, second, second_after

        first, first_after, second, second_after = await self.in_thread(session)
        self.assertEqual(len(first), 1, first)
        self.assertTrue(first[0].startswith(b"a BAD "), first)
        self.assertEqual(first_after, [b"b OK NOOP completed"])
        self.assertEqual(len(second), 1, second)
        self.assertTrue(second[0].startswith(b"d BAD "), second)
        self.assertTrue(second_after[0].startswith(b"e OK "), second_after)


class PlaintextTests(IMAPTestCase):
    config = "[auth]\nallow_plaintext = true\n"

    async def test_loginWithoutTLS(self):
        """
        RFC 3501 6.2.3 and 7.2.1: when plaintext logins are allowed the plain
        port offers AUTH=PLAIN besides STARTTLS and no LOGINDISABLED, and
        LOGIN and AUTHENTICATE work without TLS; STARTTLS is valid only in
        the not authenticated state (RFC 3501 6.2.1): BAD after login.
        """
        def session():
            raw = Raw(self.ports["imap"])
            listed = command(raw, b"a", b"CAPABILITY")
            login = command(raw, b"b", LOGIN)
            starttls = command(raw, b"c", b"STARTTLS")
            after = command(raw, b"d", b"NOOP")
            raw.close()
            other = Raw(self.ports["imap"])
            auth = command(other, b"e", b"AUTHENTICATE PLAIN " + plain("", BOB, PASSWORD))
            other.close()
            return raw.greeting, listed, login, starttls, after, auth

        greeting, listed, login, starttls, after, auth = await self.in_thread(session)
        expected = BASE | {"STARTTLS", "AUTH=PLAIN"}
        self.assertEqual(capabilities(greeting), expected)
        self.assertEqual(capabilities(listed[0]), expected)
        self.assertTrue(login[0].startswith(b"b OK "), login)
        self.assertEqual(len(starttls), 1, starttls)
        self.assertTrue(starttls[0].startswith(b"c BAD "), starttls)
        self.assertEqual(after, [b"d OK NOOP completed"])
        self.assertTrue(auth[0].startswith(b"e OK "), auth)


class CommandErrorTests(IMAPTestCase):
    async def test_unknownCommand(self):
        """
        RFC 3501 7.1.3 and 6 (BAD - command unknown): an unknown command,
        or an unknown UID command, gets BAD with its tag; the session goes on.
        """
        def session():
            raw = self.raw_session()
            lines = [command(raw, b"a", b"FROBNICATE"), command(raw, b"b", b"UID FROBNICATE 1"),
                     command(raw, b"c", b"UID CAPABILITY")]
            lines.append(command(raw, b"d", b"NOOP"))
            return lines

        *unknown, after = await self.in_thread(session)
        for tag, lines in zip(b"abc", unknown, strict=True):
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(bytes([tag]) + b" BAD "), lines)
        self.assertEqual(after, [b"d OK NOOP completed"])

    async def test_wrongState(self):
        """
        RFC 3501 3: a command in a state where it is not valid gets BAD or
        NO: SELECT, LIST and IDLE before login, FETCH, STORE and CLOSE
        with no folder selected, LOGIN and AUTHENTICATE once logged in.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            answers = [command(raw, b"a", b"SELECT INBOX"), command(raw, b"b", b'LIST "" *'),
                       command(raw, b"c", b"IDLE")]
            command(raw, b"l", LOGIN)
            answers += [command(raw, b"d", b"FETCH 1 FLAGS"),
                        command(raw, b"e", b"STORE 1 +FLAGS (\\Seen)"),
                        command(raw, b"f", b"CLOSE"), command(raw, b"g", LOGIN),
                        command(raw, b"h", b"AUTHENTICATE PLAIN " + plain("", ALICE, PASSWORD))]
            after = command(raw, b"i", b"SELECT INBOX")
            raw.close()
            return answers, after

        answers, after = await self.in_thread(session)
        for tag, lines in zip(b"abcdefgh", answers, strict=True):
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], rb"^%c (BAD|NO) " % tag)
        self.assertTrue(after[-1].startswith(b"i OK "), after)

    async def test_malformedCommands(self):
        """
        RFC 3501 7.1.3 and 9 (tag, command grammar): a line without a valid
        tag (empty, "+", "*" or "%" in it) gets an untagged "* BAD"; a
        command with missing or extra arguments gets BAD with its tag;
        the session goes on after each.
        """
        def session():
            raw = self.raw_session()
            untagged = []
            for line in (b"", b"   ", b"a+b NOOP", b"a%b NOOP", b"a*b NOOP", b'"a" NOOP'):
                raw.send(line + b"\r\nz NOOP\r\n")
                untagged.append(raw.until_tagged(b"z"))
            tagged = [command(raw, b"t1", b""), command(raw, b"t2", b"SELECT"),
                      command(raw, b"t3", b"LOGIN alice@example.org"),
                      command(raw, b"t4", b"NOOP extra"), command(raw, b"t5", b"FETCH 1"),
                      command(raw, b"t6", b"FETCH x FLAGS"),
                      command(raw, b"t7", b'SELECT "INBOX')]
            return untagged, tagged

        untagged, tagged = await self.in_thread(session)
        for lines in untagged:
            self.assertEqual(len(lines), 2, lines)
            self.assertTrue(lines[0].startswith(b"* BAD "), lines)
            self.assertEqual(lines[1], b"z OK NOOP completed")
        for n, lines in enumerate(tagged, 1):
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(b"t%d BAD " % n), lines)


class ThrottleTests(IMAPTestCase):
    config = ("[limits]\nmax_auth_failures = 10\n"
              "[auth.throttle]\nfree_failures = 2\nbase_delay = 60.0\nmax_delay = 600.0\n")

    def setUp(self):
        self.clock = Clock()
        self.patch(service_module, "LoginThrottle",
                   lambda settings, reactor: LoginThrottle(settings, self.clock))
        return super().setUp()

    async def test_blockedAfterFreeFailures(self):
        """
        [auth.throttle]: after free_failures failed logins from an address,
        every login from it fails for base_delay seconds, even with the
        right password and for another user, with the same NO
        [AUTHENTICATIONFAILED] as a wrong password (RFC 5530 3); then
        logins work again.
        """
        raw = await self.in_thread(Raw, self.ports["imaps"], self.tls())
        self.addCleanup(raw.close)

        def attempts(*pairs):
            return [command(raw, b"t", b"LOGIN %s %s" % (user.encode(), password.encode()))
                    for user, password in pairs]

        failed = await self.in_thread(attempts, (ALICE, "wrong"), (ALICE, "wrong"),
                                      (BOB, "wrong"))
        blocked = await self.in_thread(attempts, (ALICE, PASSWORD), (BOB, PASSWORD))
        self.clock.advance(59)
        still = await self.in_thread(attempts, (ALICE, PASSWORD))
        self.clock.advance(1)
        [accepted] = await self.in_thread(attempts, (ALICE, PASSWORD))
        refusal = failed[0]
        self.assertEqual(len(refusal), 1, refusal)
        self.assertTrue(refusal[0].startswith(b"t NO [AUTHENTICATIONFAILED] "), refusal)
        self.assertEqual(failed, [refusal] * 3)
        self.assertEqual(blocked, [refusal] * 2)
        self.assertEqual(still, [refusal])
        self.assertTrue(accepted[-1].startswith(b"t OK "), accepted)


class AuthFailureLimitTests(IMAPTestCase):
    config = "[limits]\nmax_auth_failures = 2\n"

    async def test_sessionClosedAfterFailures(self):
        """
        limits.max_auth_failures: the failed login that reaches the limit is
        answered NO [AUTHENTICATIONFAILED] (RFC 5530) with an untagged BYE
        (RFC 3501 7.1.5) and the connection is closed; a command pipelined
        after it is not run.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            first = command(raw, b"a", b"LOGIN alice@example.org wrong")
            raw.send(b"b AUTHENTICATE PLAIN " + plain("", ALICE, "wrong") + b"\r\nc " + LOGIN
                     + b"\r\n")
            return first, until_eof(raw)

        first, last = await self.in_thread(session)
        self.assertEqual(len(first), 1, first)
        self.assertTrue(first[0].startswith(b"a NO [AUTHENTICATIONFAILED] "), first)
        # The tagged NO comes first, so that it is not lost when TLS is
        # closed after the BYE.
        self.assertEqual(len(last), 2, last)
        self.assertTrue(last[0].startswith(b"b NO [AUTHENTICATIONFAILED] "), last)
        self.assertEqual(last[1], b"* BYE Too many failed logins")


class ErrorLimitTests(IMAPTestCase):
    config = "[limits]\nmax_errors = 3\n"

    async def test_sessionClosedAfterErrors(self):
        """
        limits.max_errors: BAD responses (unknown command, syntax error,
        wrong state) are counted and the one that reaches the limit is
        followed by an untagged BYE (RFC 3501 7.1.5) and the close; NO
        responses are not counted; commands pipelined after are not run.
        """
        def session():
            raw = Raw(self.ports["imaps"], self.tls())
            answers = [command(raw, b"a", b"FROBNICATE"), command(raw, b"b", b"SELECT"),
                       command(raw, b"c", b"LOGIN alice@example.org wrong"),
                       command(raw, b"d", b"AUTHENTICATE X-UNKNOWN")]
            raw.send(b"e FETCH 1 FLAGS\r\nf NOOP\r\n")
            return answers, until_eof(raw)

        answers, last = await self.in_thread(session)
        self.assertTrue(answers[0][0].startswith(b"a BAD "), answers)
        self.assertTrue(answers[1][0].startswith(b"b BAD "), answers)
        self.assertTrue(answers[2][0].startswith(b"c NO "), answers)
        self.assertTrue(answers[3][0].startswith(b"d NO "), answers)
        self.assertEqual(len(last), 2, last)
        self.assertRegex(last[0], rb"^e (BAD|NO) ")
        self.assertRegex(last[1], rb"^\* BYE ")


class ConnectionLimitTests(IMAPTestCase):
    config = "[limits]\nmax_connections_per_ip = 2\nmax_connections = 3\n"

    async def test_connectionLimits(self):
        """
        limits.max_connections_per_ip and max_connections, over both IMAP
        listeners together: a connection over either limit is greeted
        with an untagged BYE and closed (RFC 3501 7.1.5: BYE as the
        greeting rejects the connection); other addresses are not counted
        against one, and a closed connection frees its place.
        """
        def session():
            first = Raw(self.ports["imap"])
            second = Raw(self.ports["imaps"], self.tls())
            over_address = Raw(self.ports["imap"])
            over_address_rest = until_eof(over_address)
            other = RawFrom(self.ports["imap"], "127.0.0.2")
            over_total = RawFrom(self.ports["imap"], "127.0.0.3")
            over_total_rest = until_eof(over_total)
            first.close()
            deadline = time.monotonic() + 10
            while True:
                again = Raw(self.ports["imap"])
                if again.greeting.startswith(b"* OK ") or time.monotonic() > deadline:
                    break
                again.close()
                time.sleep(0.05)
            answered = command(again, b"a", b"NOOP")
            for raw in (second, other, again):
                raw.close()
            return (first.greeting, second.greeting, over_address.greeting, over_address_rest,
                    other.greeting, over_total.greeting, over_total_rest, again.greeting,
                    answered)

        (first, second, over_address, over_address_rest, other, over_total, over_total_rest,
         again, answered) = await self.in_thread(session)
        for greeting in (first, second, other, again):
            self.assertTrue(greeting.startswith(b"* OK "), greeting)
        for greeting, rest in ((over_address, over_address_rest), (over_total, over_total_rest)):
            self.assertRegex(greeting, rb"^\* BYE ")
            self.assertEqual(rest, [])
        self.assertEqual(answered, [b"a OK NOOP completed"])


class AutologoutTests(IMAPTestCase):
    def setUp(self):
        self.clock = Clock()
        self.patch(IMAPServer, "callLater",
                   lambda protocol, delay, function: self.clock.callLater(delay, function))
        return super().setUp()

    async def test_autologout(self):
        """
        RFC 3501 5.4: a logged-in session is not logged out before 30
        minutes without a command (the default idle_timeout), any command
        restarts the timer, and at the end the server sends an untagged BYE
        and closes (RFC 3501 7.1.5).  Before login the shorter
        command_timeout applies, as RFC 9051 5.4 allows.
        """
        anonymous = await self.in_thread(Raw, self.ports["imaps"], self.tls())
        self.addCleanup(anonymous.close)
        logged_in = await self.in_thread(self.raw_session)  # its last command at 0 s
        pre_auth = self.settings.limits.command_timeout

        self.clock.advance(pre_auth - 1)
        anonymous_alive = await self.in_thread(command, anonymous, b"a", b"NOOP")
        self.clock.advance(pre_auth)
        anonymous_end = await self.in_thread(until_eof, anonymous)

        self.clock.advance(1799 - self.clock.seconds())
        first = await self.in_thread(command, logged_in, b"b", b"NOOP")
        self.clock.advance(1799)
        second = await self.in_thread(command, logged_in, b"c", b"NOOP")
        self.clock.advance(1800)
        end = await self.in_thread(until_eof, logged_in)

        self.assertEqual(anonymous_alive, [b"a OK NOOP completed"])
        self.assertEqual(len(anonymous_end), 1, anonymous_end)
        self.assertRegex(anonymous_end[0], rb"^\* BYE ")
        self.assertEqual(first, [b"b OK NOOP completed"])
        self.assertEqual(second, [b"c OK NOOP completed"])
        self.assertEqual(len(end), 1, end)
        self.assertRegex(end[0], rb"^\* BYE ")
