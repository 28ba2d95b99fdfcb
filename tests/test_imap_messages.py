"""
Per-command tests of the IMAP commands of the selected state (RFC 3501 6.3.1,
6.3.2, 6.3.11 and 6.4; RFC 3691 UNSELECT, RFC 4315 UIDPLUS, RFC 6851 MOVE),
over a bare socket against the real listeners of an in-process server.

Responses are compared line by line.  What RFC 3501 leaves to the server is
not pinned down: the human-readable text after a status response (and its
response code), the order of the untagged responses to SELECT, the order of
the flags in a flag list, and the order in which a run of EXPUNGE responses
names the messages (they are checked by applying them, 7.4.1).
"""

from __future__ import annotations

import calendar
import imaplib
import re
import time

from twisted.internet.threads import deferToThread

from tests.test_imap_server import ALICE, MESSAGE, PASSWORD, IMAPTestCase, Raw

#: A multipart/mixed message: a quoted-printable text part, a message/rfc822
#: part holding a one-part HTML message, and a base64 attachment.
MULTIPART = (
    b"From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: Multipart\r\n"
    b"Date: Tue, 03 Mar 2026 09:08:07 +0100\r\n"
    b"Message-ID: <multi@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"Preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=C3=BC=C3=9Fe aus Berlin\r\n"
    b"zweite Zeile\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Description: forwarded\r\n"
    b"\r\n"
    b"From: Inner <inner@example.com>\r\n"
    b"Subject: Inner subject\r\n"
    b"Content-Type: text/html; charset=us-ascii\r\n"
    b"\r\n"
    b"<p>inner</p>\r\n"
    b"--outer\r\n"
    b'Content-Type: application/octet-stream; name="data.bin"\r\n'
    b'Content-Disposition: attachment; filename="data.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--outer--\r\n"
    b"Epilogue\r\n")

_MULTIPART_HEADER = MULTIPART[:MULTIPART.index(b"\r\n\r\n") + 4]
_INNER = (b"From: Inner <inner@example.com>\r\nSubject: Inner subject\r\n"
          b"Content-Type: text/html; charset=us-ascii\r\n\r\n")
_INNER_ENVELOPE = (b'(NIL "Inner subject" (("Inner" NIL "inner" "example.com")) '
                   b'(("Inner" NIL "inner" "example.com")) (("Inner" NIL "inner" "example.com")) '
                   b"NIL NIL NIL NIL NIL)")

#: MESSAGE's header block and the octets after it.
_HEADER = MESSAGE[:MESSAGE.index(b"\r\n\r\n") + 4]
_TEXT = MESSAGE[len(_HEADER):]
_ENVELOPE = (b'("Mon, 02 Feb 2026 10:00:00 +0000" "Hello there" (("Bob" NIL "bob" "example.org")) '
             b'(("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) '
             b'(("Alice" NIL "alice" "example.org")) NIL NIL NIL "<1@example.org>")')
_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 4)' % len(_TEXT)

_STATUS = re.compile(rb"((?:\* |[^ ]+ )(?:OK|NO|BAD|BYE|PREAUTH))(?: (\[[^\]]*\]))?(?: .*)?")
_FETCH = re.compile(rb"\* (\d+) FETCH \((.*)\)")
_UID_ITEM = re.compile(rb"(?:^| )UID (\d+)")
_FLAGS_ITEM = re.compile(rb"(?:^| )FLAGS \(([^()]*)\)")
_CODE = re.compile(rb"\[([A-Z-]+) ([^\]]*)\]")


def status(line: bytes) -> bytes:
    """
    A status response without its human-readable text (RFC 3501 7.1):
    "* OK [UNSEEN 2] First unseen" is "* OK [UNSEEN 2]", "a OK done" is "a OK".
    Other lines are kept as they are.
    """
    match = _STATUS.fullmatch(line)
    if match is None:
        return line
    return match[1] + (b" " + match[2] if match[2] else b"")


def fetch_flags(line: bytes) -> tuple[int, int | None, frozenset[bytes]]:
    """
    An untagged FETCH that holds FLAGS and perhaps UID, and nothing else:
    (sequence number, UID or None, the set of flags).
    """
    match = _FETCH.fullmatch(line)
    assert match is not None, line
    items = match[2]
    flags = _FLAGS_ITEM.search(items)
    assert flags is not None, line
    uid = _UID_ITEM.search(items)
    rest = _FLAGS_ITEM.sub(b"", _UID_ITEM.sub(b"", items)).strip()
    assert rest == b"", line
    return int(match[1]), int(uid[1]) if uid else None, frozenset(flags[1].split())


def code(lines: list[bytes], name: bytes) -> bytes:
    """
    The value of response code C{name} in C{lines}: b"4 1:2" of "[COPYUID 4 1:2]".
    """
    for line in lines:
        for found in _CODE.finditer(line):
            if found[1] == name:
                return found[2]
    raise AssertionError(f"no {name!r} in {lines!r}")


def after_expunges(uids: list[int], lines: list[bytes]) -> list[int]:
    """
    The UIDs left after applying the untagged EXPUNGE responses among
    C{lines} in order, each renumbering those after it (RFC 3501 7.4.1).
    """
    uids = list(uids)
    for line in lines:
        found = re.fullmatch(rb"\* (\d+) EXPUNGE", line)
        if found:
            del uids[int(found[1]) - 1]
    return uids


def internal_date(text: bytes) -> int:
    """
    The moment of an INTERNALDATE date-time, as a POSIX timestamp.
    """
    return int(time.mktime(imaplib.Internaldate2tuple(b"INTERNALDATE " + text)))


def _sorted_flags(match: re.Match[bytes]) -> bytes:
    return b"FLAGS (" + b" ".join(sorted(match[1].split())) + b")"


def normal(data: bytes) -> bytes:
    """
    FETCH responses with what RFC 3501 leaves open made one way: the flags
    of a flag list sorted (2.3.2 gives no order) and the field names of a
    HEADER.FIELDS label upper-cased (field names are case-insensitive,
    RFC 5322 1.2.2).
    """
    data = re.sub(rb"FLAGS \(([^()]*)\)", _sorted_flags, data)
    return re.sub(rb"BODY\[[^\]]*\]", lambda m: m[0].upper(), data)


def _logout(raw: Raw) -> None:
    """
    LOGOUT and wait for the server to close the connection, so that the
    session has left its folder before the server stops.
    """
    try:
        raw.send(b"zz LOGOUT\r\n")
        while raw.sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        raw.close()


class MessageTestCase(IMAPTestCase):
    """
    Helpers for one bare session or several, logged in as alice.
    """

    def session(self) -> Raw:
        """
        A bare session logged in as alice, nothing selected.
        """
        raw = Raw(self.ports["imaps"], self.tls())
        # Cleanups run in the reactor thread, which the server needs.
        self.addCleanup(deferToThread, _logout, raw)
        raw.send(b"l LOGIN %s %s\r\n" % (ALICE.encode(), PASSWORD.encode()))
        answer = raw.until_tagged(b"l")[-1]
        if not answer.startswith(b"l OK"):
            raise AssertionError(answer)
        return raw

    def assertSame(self, actual: bytes | list[bytes], expected: bytes | list[bytes]) -> None:
        """
        Equal once L{normal}ized.
        """
        if isinstance(actual, list):
            self.assertEqual([normal(a) for a in actual], [normal(e) for e in expected])
        else:
            self.assertEqual(normal(actual), normal(expected))

    @staticmethod
    def call(raw: Raw, tag: bytes, command: bytes) -> list[bytes]:
        raw.send(tag + b" " + command + b"\r\n")
        return raw.until_tagged(tag)

    @staticmethod
    def append(raw: Raw, message: bytes = MESSAGE, flags: bytes = b"", date: bytes = b"",
               folder: bytes = b"INBOX", tag: bytes = b"a") -> list[bytes]:
        """
        APPEND with a non-synchronizing literal (RFC 7888).
        """
        date = b" " + date if date else b""
        raw.send(b"%s APPEND %s (%s)%s {%d+}\r\n%s\r\n" % (tag, folder, flags, date,
                                                          len(message), message))
        return raw.until_tagged(tag)


class SelectExamineTests(MessageTestCase):
    async def test_selectResponses(self):
        """
        RFC 3501 6.3.1: SELECT answers FLAGS (with the keywords in use),
        EXISTS, RECENT, OK [UNSEEN n] naming the first message without
        \\Seen, [UIDVALIDITY] (the one APPENDUID gave, RFC 4315 3),
        [UIDNEXT], [PERMANENTFLAGS] with \\* since new keywords may be
        made (7.1), and a tagged OK [READ-WRITE].  With every message
        \\Seen there is no first unseen, so no UNSEEN.
        """
        def session():
            raw = self.session()
            appended = self.append(raw, flags=b"\\Seen", tag=b"a")
            self.append(raw, flags=b"$Work", tag=b"b")
            self.append(raw, tag=b"c")
            selected = self.call(raw, b"s", b"SELECT INBOX")
            self.call(raw, b"t", b"STORE 1:* +FLAGS.SILENT (\\Seen)")
            return appended, selected, self.call(raw, b"u", b"SELECT INBOX")

        appended, selected, all_seen = await self.in_thread(session)
        uidvalidity = code(appended, b"APPENDUID").split()[0]
        self.assertEqual(code(appended, b"APPENDUID"), uidvalidity + b" 1")
        flags = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)"
        expected = [b"* 3 EXISTS", b"* 3 RECENT", b"* FLAGS " + flags,
                    b"* OK [PERMANENTFLAGS " + flags[:-1] + b" \\*)]", b"* OK [UNSEEN 2]",
                    b"* OK [UIDVALIDITY " + uidvalidity + b"]", b"* OK [UIDNEXT 4]"]
        self.assertCountEqual([normal(status(line)) for line in selected[:-1]],
                              [normal(line) for line in expected])
        self.assertEqual(status(selected[-1]), b"s OK [READ-WRITE]")
        # The same session selects again: the messages were \Recent in it
        # already, and now every one is \Seen.
        self.assertCountEqual([normal(status(line)) for line in all_seen[:-1]
                               if not line.endswith(b"RECENT")],
                              [normal(line) for line in expected if b"RECENT" not in line
                               and b"UNSEEN" not in line])
        self.assertEqual(status(all_seen[-1]), b"u OK [READ-WRITE]")

    async def test_examineIsReadOnly(self):
        """
        RFC 3501 6.3.2: EXAMINE answers like SELECT and OK [READ-ONLY]; no
        flag is permanent.  Nothing may change: FETCH BODY[] does not set
        \\Seen (6.4.5, so no FLAGS comes with it), STORE, EXPUNGE and MOVE
        (RFC 6851 3.3) are refused with NO; COPY out of it works.
        """
        def session():
            raw = self.session()
            self.append(raw)
            self.append(raw, flags=b"\\Deleted")
            examined = self.call(raw, b"e", b"EXAMINE INBOX")
            return (examined,
                    self.call(raw, b"f", b"FETCH 1 BODY[]"),
                    self.call(raw, b"g", b"STORE 1 +FLAGS (\\Seen)"),
                    self.call(raw, b"h", b"EXPUNGE"),
                    self.call(raw, b"i", b"MOVE 1 Trash"),
                    self.call(raw, b"j", b"FETCH 1:* FLAGS"),
                    self.call(raw, b"k", b"COPY 1 Archive"),
                    self.call(raw, b"l", b"STATUS INBOX (MESSAGES UNSEEN)"))

        examined, fetched, stored, expunged, moved, flags, copied, after = \
            await self.in_thread(session)
        self.assertIn(b"* OK [PERMANENTFLAGS ()]", [status(line) for line in examined])
        self.assertIn(b"* 2 EXISTS", examined)
        self.assertIn(normal(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"),
                      [normal(line) for line in examined])
        self.assertEqual(status(examined[-1]), b"e OK [READ-ONLY]")
        self.assertEqual(fetched, [b"* 1 FETCH (BODY[] {%d}" % len(MESSAGE),
                                   *MESSAGE.split(b"\r\n")[:-1], b")", b"f OK FETCH completed"])
        for lines, tag in ((stored, b"g"), (expunged, b"h"), (moved, b"i")):
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(tag + b" NO"), lines)
        self.assertEqual([fetch_flags(line) for line in flags[:-1]],
                         [(1, None, {b"\\Recent"}), (2, None, {b"\\Deleted", b"\\Recent"})])
        self.assertTrue(copied[-1].startswith(b"k OK [COPYUID "), copied)
        self.assertEqual(after[0], b"* STATUS INBOX (MESSAGES 2 UNSEEN 2)")

    async def test_examineKeepsRecent(self):
        """
        RFC 3501 6.3.2: "EXAMINE MUST NOT cause messages to lose the
        \\Recent flag" (and 2.3.2: only a read-write session takes it).
        The examining session sees the new messages as \\Recent; a session
        that selects the folder afterwards still does, and so does STATUS.
        """
        def session():
            examiner = self.session()
            self.append(examiner, tag=b"a")
            self.append(examiner, tag=b"b")
            examined = self.call(examiner, b"e", b"EXAMINE INBOX")
            flags = self.call(examiner, b"f", b"FETCH 1:2 FLAGS")
            other = self.session()
            counted = self.call(other, b"t", b"STATUS INBOX (RECENT)")
            return examined, flags, counted, self.call(other, b"s", b"SELECT INBOX")

        examined, flags, counted, selected = await self.in_thread(session)
        self.assertIn(b"* 2 RECENT", examined)
        self.assertEqual([fetch_flags(line) for line in flags[:-1]],
                         [(1, None, {b"\\Recent"}), (2, None, {b"\\Recent"})])
        self.assertEqual(counted[0], b"* STATUS INBOX (RECENT 2)")
        self.assertIn(b"* 2 RECENT", selected)

    async def test_selectNonexistentFolder(self):
        """
        RFC 3501 6.3.1: a SELECT that fails leaves no folder selected, even
        if one was before ("now in authenticated state"), so a command of
        the selected state is BAD; the same for EXAMINE (6.3.2).
        """
        def session():
            raw = self.session()
            self.append(raw)
            return (self.call(raw, b"s", b"SELECT INBOX"),
                    self.call(raw, b"t", b"SELECT Nope"),
                    self.call(raw, b"f", b"FETCH 1 FLAGS"),
                    self.call(raw, b"u", b"SELECT INBOX"),
                    self.call(raw, b"v", b"EXAMINE Nope"),
                    self.call(raw, b"c", b"CHECK"))

        selected, failed, fetched, again, examined, checked = await self.in_thread(session)
        self.assertEqual(status(selected[-1]), b"s OK [READ-WRITE]")
        self.assertEqual(len(failed), 1)
        self.assertEqual(status(failed[0])[:4], b"t NO")
        self.assertEqual(len(fetched), 1)
        self.assertEqual(status(fetched[0]), b"f BAD")
        self.assertEqual(status(again[-1]), b"u OK [READ-WRITE]")
        self.assertEqual([status(examined[0])[:4]], [b"v NO"])
        self.assertEqual(status(checked[0]), b"c BAD")


class AppendTests(MessageTestCase):
    async def test_appendKeepsFlagsAndDate(self):
        """
        RFC 3501 6.3.11: the flags and date-time given are set on the new
        message (plus \\Recent); without them the flags are empty and the
        internal date is now.  INTERNALDATE pads the day with a space
        (9, date-day-fixed).  A date-time in another zone names the same
        moment.  APPENDUID gives the UIDVALIDITY and consecutive UIDs
        (RFC 4315 3).
        """
        def session():
            raw = self.session()
            first = self.append(raw, flags=b"\\Flagged $Work \\Seen",
                                date=b'"05-Mar-2024 13:15:16 +0000"', tag=b"a")
            second = self.append(raw, tag=b"b")
            third = self.append(raw, flags=b"\\Draft", date=b'"31-Dec-2023 23:30:00 -0130"',
                                tag=b"c")
            selected = self.call(raw, b"s", b"SELECT INBOX")
            return first, second, third, selected, self.call(
                raw, b"f", b"FETCH 1:3 (FLAGS INTERNALDATE RFC822.SIZE)")

        started = time.time()
        first, second, third, selected, fetched = await self.in_thread(session)
        uidvalidity = code(selected, b"UIDVALIDITY")
        self.assertEqual([code(lines, b"APPENDUID") for lines in (first, second, third)],
                         [uidvalidity + b" 1", uidvalidity + b" 2", uidvalidity + b" 3"])
        self.assertSame(fetched[0], b'* 1 FETCH (FLAGS (\\Seen \\Flagged \\Recent $Work) '
                                    b'INTERNALDATE " 5-Mar-2024 13:15:16 +0000" '
                                    b"RFC822.SIZE %d)" % len(MESSAGE))
        now = re.fullmatch(rb'\* 2 FETCH \(FLAGS \(\\Recent\) INTERNALDATE ("[^"]*") '
                           rb"RFC822.SIZE (\d+)\)", fetched[1])
        self.assertIsNotNone(now, fetched[1])
        self.assertLessEqual(int(started) - 1, internal_date(now[1]))
        self.assertLessEqual(internal_date(now[1]), time.time() + 1)
        zoned = re.fullmatch(rb'\* 3 FETCH \(FLAGS \(\\Draft \\Recent\) INTERNALDATE ("[^"]*") '
                             rb"RFC822.SIZE \d+\)", normal(fetched[2]))
        self.assertIsNotNone(zoned, fetched[2])
        self.assertEqual(internal_date(zoned[1]),
                         calendar.timegm((2024, 1, 1, 1, 0, 0)))

    async def test_appendSynchronizingLiteral(self):
        """
        RFC 3501 7.5: a synchronizing literal is asked for with a "+"
        continuation request; the message then reads back exactly.
        """
        message = b"Subject: sync\r\n\r\nbody\r\n"

        def session():
            raw = self.session()
            raw.send(b"a APPEND INBOX {%d}\r\n" % len(message))
            go_ahead = raw.line()
            raw.send(message + b"\r\n")
            appended = raw.until_tagged(b"a")
            self.call(raw, b"s", b"SELECT INBOX")
            return go_ahead, appended, self.call(raw, b"f", b"FETCH 1 (RFC822.SIZE BODY.PEEK[])")

        go_ahead, appended, fetched = await self.in_thread(session)
        self.assertTrue(go_ahead.startswith(b"+"), go_ahead)
        self.assertTrue(appended[-1].startswith(b"a OK [APPENDUID "), appended)
        self.assertEqual(b"\r\n".join(fetched),
                         b"* 1 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\nf OK FETCH completed"
                         % (len(message), len(message), message))

    async def test_appendToNonexistentFolder(self):
        """
        RFC 3501 6.3.11: APPEND to a folder that does not exist fails with
        NO [TRYCREATE] (whether the server reads the literal first or not),
        and does not create it; \\Recent is no flag APPEND may set (2.3.2).
        """
        def session():
            raw = self.session()
            plus = self.append(raw, folder=b"Nope", tag=b"a")
            raw.send(b"b APPEND Nope {%d}\r\n" % len(MESSAGE))
            answer = raw.line()
            if answer.startswith(b"+"):
                raw.send(MESSAGE + b"\r\n")
                answer = raw.until_tagged(b"b")[-1]
            recent = self.append(raw, flags=b"\\Recent", tag=b"c")
            return (plus, answer, recent, self.call(raw, b"d", b"STATUS Nope (MESSAGES)"),
                    self.call(raw, b"e", b"STATUS INBOX (MESSAGES)"))

        plus, sync, recent, nope, inbox = await self.in_thread(session)
        self.assertEqual([status(line) for line in plus], [b"a NO [TRYCREATE]"])
        self.assertEqual(status(sync), b"b NO [TRYCREATE]")
        self.assertEqual(len(recent), 1)
        self.assertRegex(recent[0], rb"^c (NO|BAD)\b")
        self.assertEqual(len(nope), 1)
        self.assertTrue(nope[0].startswith(b"d NO"), nope)
        self.assertEqual(inbox[0], b"* STATUS INBOX (MESSAGES 0)")


class CloseExpungeTests(MessageTestCase):
    async def test_closeExpungesSilently(self):
        """
        RFC 3501 6.4.2: CLOSE removes the \\Deleted messages without any
        untagged EXPUNGE and leaves no folder selected.
        """
        def session():
            raw = self.session()
            for n, flags in enumerate((b"\\Deleted", b"", b"\\Deleted \\Seen", b"")):
                self.append(raw, flags=flags, tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            return (self.call(raw, b"c", b"CLOSE"),
                    self.call(raw, b"f", b"FETCH 1 FLAGS"),
                    self.call(raw, b"t", b"SELECT INBOX"),
                    self.call(raw, b"u", b"UID FETCH 1:* FLAGS"))

        closed, fetched, selected, uids = await self.in_thread(session)
        self.assertEqual([status(line) for line in closed], [b"c OK"])
        self.assertEqual(status(fetched[0]), b"f BAD")
        self.assertIn(b"* 2 EXISTS", selected)
        self.assertEqual([fetch_flags(line)[:2] for line in uids[:-1]], [(1, 2), (2, 4)])

    async def test_closeReadOnlyExpungesNothing(self):
        """
        RFC 3501 6.4.2: "No messages are removed ... if the mailbox is
        selected by an EXAMINE command or is otherwise selected read-only."
        """
        def session():
            raw = self.session()
            for n in range(3):
                self.append(raw, flags=b"\\Deleted", tag=b"a%d" % n)
            self.call(raw, b"e", b"EXAMINE INBOX")
            return self.call(raw, b"c", b"CLOSE"), self.call(raw, b"t", b"STATUS INBOX (MESSAGES)")

        closed, counted = await self.in_thread(session)
        self.assertEqual([status(line) for line in closed], [b"c OK"])
        self.assertEqual(counted[0], b"* STATUS INBOX (MESSAGES 3)")

    async def test_unselectDoesNotExpunge(self):
        """
        RFC 3691 2: UNSELECT leaves the selected state like CLOSE but removes
        nothing; without a folder selected it is BAD.
        """
        def session():
            raw = self.session()
            for n in range(3):
                self.append(raw, flags=b"\\Deleted", tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            return (self.call(raw, b"u", b"UNSELECT"),
                    self.call(raw, b"f", b"FETCH 1 FLAGS"),
                    self.call(raw, b"v", b"UNSELECT"),
                    self.call(raw, b"t", b"STATUS INBOX (MESSAGES)"))

        unselected, fetched, again, counted = await self.in_thread(session)
        self.assertEqual([status(line) for line in unselected], [b"u OK"])
        self.assertEqual(status(fetched[0]), b"f BAD")
        self.assertEqual([status(line) for line in again], [b"v BAD"])
        self.assertEqual(counted[0], b"* STATUS INBOX (MESSAGES 3)")

    async def test_expungeRenumbers(self):
        """
        RFC 3501 6.4.3 and 7.4.1: EXPUNGE answers one untagged EXPUNGE per
        removed message, each renumbering the messages after it; the
        remaining messages are numbered 1..n.  CHECK (6.4.1) answers OK
        with nothing to tell.
        """
        def session():
            raw = self.session()
            for n in range(6):
                self.append(raw, flags=b"\\Deleted" if n in (1, 3, 4) else b"", tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            return (self.call(raw, b"c", b"CHECK"), self.call(raw, b"e", b"EXPUNGE"),
                    self.call(raw, b"f", b"FETCH 1:* (UID)"), self.call(raw, b"g", b"EXPUNGE"))

        checked, expunged, fetched, nothing = await self.in_thread(session)
        self.assertEqual([status(line) for line in checked], [b"c OK"])
        self.assertEqual(len(expunged), 4, expunged)
        self.assertTrue(all(re.fullmatch(rb"\* \d+ EXPUNGE", line) for line in expunged[:-1]),
                        expunged)
        self.assertEqual(after_expunges([1, 2, 3, 4, 5, 6], expunged), [1, 3, 6])
        self.assertEqual(status(expunged[-1]), b"e OK")
        self.assertEqual(fetched, [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 3)",
                                   b"* 3 FETCH (UID 6)", b"f OK FETCH completed"])
        self.assertEqual([status(line) for line in nothing], [b"g OK"])


class StoreTests(MessageTestCase):
    def flagged_session(self, count: int = 3) -> Raw:
        """
        A session with C{count} new messages, \\Seen, in INBOX selected.
        """
        raw = self.session()
        for n in range(count):
            self.append(raw, flags=b"\\Seen", tag=b"a%d" % n)
        self.call(raw, b"s", b"SELECT INBOX")
        return raw

    async def test_storeFlags(self):
        """
        RFC 3501 6.4.6: FLAGS replaces, +FLAGS adds, -FLAGS removes; each
        answers an untagged FETCH with the new flags of every message of
        the set, \\Recent included (it is not replaced, 2.3.2), keywords
        too.
        """
        def session():
            raw = self.flagged_session()
            return (self.call(raw, b"a", b"STORE 1:2 FLAGS (\\Flagged $Work)"),
                    self.call(raw, b"b", b"STORE 2:* +FLAGS ($Home \\Answered)"),
                    self.call(raw, b"c", b"STORE 1:* -FLAGS (\\Seen $Work)"),
                    self.call(raw, b"d", b"STORE 3 FLAGS ()"))

        replaced, added, removed, emptied = await self.in_thread(session)
        recent = b"\\Recent"
        self.assertEqual([fetch_flags(line) for line in replaced[:-1]], [
            (1, None, {b"\\Flagged", b"$Work", recent}),
            (2, None, {b"\\Flagged", b"$Work", recent})])
        self.assertEqual([fetch_flags(line) for line in added[:-1]], [
            (2, None, {b"\\Flagged", b"$Work", b"$Home", b"\\Answered", recent}),
            (3, None, {b"\\Seen", b"$Home", b"\\Answered", recent})])
        self.assertEqual([fetch_flags(line) for line in removed[:-1]], [
            (1, None, {b"\\Flagged", recent}),
            (2, None, {b"\\Flagged", b"$Home", b"\\Answered", recent}),
            (3, None, {b"$Home", b"\\Answered", recent})])
        self.assertEqual([fetch_flags(line) for line in emptied[:-1]], [(3, None, {recent})])
        self.assertEqual([status(lines[-1]) for lines in (replaced, added, removed, emptied)],
                         [b"a OK", b"b OK", b"c OK", b"d OK"])

    async def test_storeSilent(self):
        """
        RFC 3501 6.4.6: FLAGS.SILENT, +FLAGS.SILENT and -FLAGS.SILENT
        change the flags like the others but answer no untagged FETCH to
        the session that stored; the changes are there when fetched.
        """
        def session():
            raw = self.flagged_session()
            return ([self.call(raw, b"a", b"STORE 1 FLAGS.SILENT (\\Draft)"),
                     self.call(raw, b"b", b"STORE 2:3 +FLAGS.SILENT (\\Deleted $Junk)"),
                     self.call(raw, b"c", b"STORE 3 -FLAGS.SILENT (\\Seen)"),
                     self.call(raw, b"d", b"UID STORE 2 -FLAGS.SILENT ($Junk)")],
                    self.call(raw, b"f", b"FETCH 1:* FLAGS"))

        silent, fetched = await self.in_thread(session)
        self.assertEqual([[status(line) for line in lines] for lines in silent],
                         [[b"a OK"], [b"b OK"], [b"c OK"], [b"d OK"]])
        self.assertEqual([fetch_flags(line) for line in fetched[:-1]], [
            (1, None, {b"\\Draft", b"\\Recent"}),
            (2, None, {b"\\Seen", b"\\Deleted", b"\\Recent"}),
            (3, None, {b"\\Deleted", b"$Junk", b"\\Recent"})])

    async def test_uidStoreAnswersUIDs(self):
        """
        RFC 3501 6.4.8: UID STORE takes UIDs, and its untagged FETCH
        responses include the UID; a UID with no message is not an error;
        "a UID range of 559:* always includes the UID of the last message
        in the mailbox, even if 559 is higher than any assigned UID value".
        """
        def session():
            raw = self.flagged_session(4)
            self.call(raw, b"x", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
            self.call(raw, b"y", b"EXPUNGE")
            return (self.call(raw, b"a", b"UID STORE 3:4 +FLAGS (\\Flagged)"),
                    self.call(raw, b"b", b"UID STORE 1 +FLAGS (\\Flagged)"),
                    self.call(raw, b"c", b"UID STORE 100:* -FLAGS (\\Seen)"))

        stored, missing, last = await self.in_thread(session)
        self.assertEqual([fetch_flags(line) for line in last[:-1]],
                         [(3, 4, {b"\\Flagged", b"\\Recent"})])
        self.assertEqual([fetch_flags(line) for line in stored[:-1]], [
            (2, 3, {b"\\Seen", b"\\Flagged", b"\\Recent"}),
            (3, 4, {b"\\Seen", b"\\Flagged", b"\\Recent"})])
        self.assertEqual(status(stored[-1]), b"a OK")
        self.assertEqual([status(line) for line in missing], [b"b OK"])

    async def test_recentCannotBeStored(self):
        """
        RFC 3501 2.3.2: "\\Recent can not be used as an argument in a
        STORE ... command"; such a STORE is refused and changes nothing.
        New keywords may be stored (PERMANENTFLAGS has \\*) and show in the
        FLAGS of the next SELECT (7.2.6).
        """
        def session():
            raw = self.flagged_session(1)
            refused = [self.call(raw, b"a", b"STORE 1 +FLAGS (\\Recent)"),
                       self.call(raw, b"b", b"STORE 1 FLAGS (\\Recent \\Flagged)"),
                       self.call(raw, b"c", b"STORE 1 -FLAGS (\\Recent)")]
            keyword = self.call(raw, b"d", b"STORE 1 +FLAGS (Project-X)")
            fetched = self.call(raw, b"f", b"FETCH 1 FLAGS")
            return refused, keyword, fetched, self.call(raw, b"s", b"SELECT INBOX")

        refused, keyword, fetched, selected = await self.in_thread(session)
        for lines, tag in zip(refused, (b"a", b"b", b"c"), strict=True):
            self.assertEqual(len(lines), 1, lines)
            self.assertRegex(lines[0], rb"^" + tag + rb" (NO|BAD)\b")
        self.assertEqual([fetch_flags(line) for line in keyword[:-1]],
                         [(1, None, {b"\\Seen", b"\\Recent", b"Project-X"})])
        self.assertEqual([fetch_flags(line) for line in fetched[:-1]],
                         [(1, None, {b"\\Seen", b"\\Recent", b"Project-X"})])
        flags = [line for line in selected if line.startswith(b"* FLAGS ")]
        self.assertEqual(len(flags), 1, selected)
        self.assertEqual(set(flags[0][9:-1].split()), {
            b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft", b"Project-X"})


class CopyMoveTests(MessageTestCase):
    async def test_copyToNonexistentFolder(self):
        """
        RFC 3501 6.4.7: COPY to a folder that does not exist fails with
        NO [TRYCREATE]; so do UID COPY (6.4.8), MOVE and UID MOVE (RFC
        6851 3.3), which then expunge nothing.
        """
        def session():
            raw = self.session()
            for n in range(2):
                self.append(raw, tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            return ([self.call(raw, b"a", b"COPY 1 Nope"),
                     self.call(raw, b"b", b"UID COPY 1:2 Nope"),
                     self.call(raw, b"c", b"MOVE 1 Nope"),
                     self.call(raw, b"d", b"UID MOVE 1:* Nope")],
                    self.call(raw, b"f", b"FETCH 1:* (UID)"))

        refused, fetched = await self.in_thread(session)
        self.assertEqual([[status(line) for line in lines] for lines in refused],
                         [[tag + b" NO [TRYCREATE]"] for tag in (b"a", b"b", b"c", b"d")])
        self.assertEqual(fetched, [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)",
                                   b"f OK FETCH completed"])

    async def test_copyKeepsFlagsAndDate(self):
        """
        RFC 3501 6.4.7: the copy keeps the flags and internal date (SHOULD)
        and is \\Recent; COPYUID names source and destination UIDs (RFC
        4315 3) with the destination's UIDVALIDITY.
        """
        def session():
            raw = self.session()
            self.append(raw, flags=b"\\Answered $Label1", date=b'"14-Jul-2025 08:30:00 +0000"')
            self.call(raw, b"s", b"SELECT INBOX")
            copied = self.call(raw, b"c", b"COPY 1 Archive")
            examined = self.call(raw, b"e", b"EXAMINE Archive")
            return copied, examined, self.call(raw, b"f", b"FETCH 1 (UID FLAGS INTERNALDATE)")

        copied, examined, fetched = await self.in_thread(session)
        self.assertEqual(code(copied, b"COPYUID"), code(examined, b"UIDVALIDITY") + b" 1 1")
        self.assertSame(fetched[0], b'* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent $Label1) '
                                    b'INTERNALDATE "14-Jul-2025 08:30:00 +0000")')

    async def test_uidMove(self):
        """
        RFC 6851 3.3 and 4.3: UID MOVE answers an untagged OK [COPYUID],
        then an EXPUNGE per moved message, then the tagged OK.  No STORE
        is seen: another session that has the folder selected is told
        only the EXPUNGEs, never a \\Deleted flag.
        """
        def session():
            raw = self.session()
            for n in range(5):
                self.append(raw, tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            self.call(raw, b"x", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
            self.call(raw, b"y", b"EXPUNGE")
            other = self.session()
            self.call(other, b"s", b"SELECT INBOX")
            moved = self.call(raw, b"m", b"UID MOVE 2,4:5 Trash")
            trash = self.call(raw, b"t", b"STATUS Trash (UIDVALIDITY MESSAGES)")
            return (moved, trash, self.call(raw, b"f", b"FETCH 1:* (UID)"),
                    self.call(other, b"n", b"NOOP"))

        moved, trash, fetched, told = await self.in_thread(session)
        uidvalidity = re.fullmatch(rb"\* STATUS Trash \(UIDVALIDITY (\d+) MESSAGES 3\)",
                                   trash[0])
        self.assertIsNotNone(uidvalidity, trash)
        self.assertEqual(status(moved[0]), b"* OK [COPYUID %s 2,4:5 1:3]" % uidvalidity[1])
        self.assertEqual(len(moved), 5, moved)
        self.assertTrue(all(re.fullmatch(rb"\* \d+ EXPUNGE", line) for line in moved[1:-1]),
                        moved)
        self.assertEqual(after_expunges([2, 3, 4, 5], moved[1:-1]), [3])
        self.assertEqual(status(moved[-1]), b"m OK")
        self.assertEqual(fetched, [b"* 1 FETCH (UID 3)", b"f OK FETCH completed"])
        self.assertTrue(all(re.fullmatch(rb"\* \d+ EXPUNGE", line) for line in told[:-1]),
                        told)
        self.assertEqual(after_expunges([2, 3, 4, 5], told), [3])

    async def test_moveIntoSelectedFolder(self):
        """
        RFC 6851 3.3: "moving a message to the currently selected mailbox
        (that is, where the source and target mailboxes are the same) is
        allowed when copying the message to the currently selected mailbox
        is allowed."  COPY into it is; so MOVE must be: the message gets a
        new UID at the end, the old one is expunged.
        """
        def session():
            raw = self.session()
            for n in range(2):
                self.append(raw, tag=b"a%d" % n)
            self.call(raw, b"s", b"SELECT INBOX")
            copied = self.call(raw, b"c", b"COPY 2 INBOX")
            return copied, self.call(raw, b"m", b"MOVE 1 INBOX"), \
                self.call(raw, b"f", b"FETCH 1:* (UID)")

        copied, moved, fetched = await self.in_thread(session)
        self.assertTrue(copied[-1].startswith(b"c OK [COPYUID "), copied)
        self.assertEqual(status(moved[-1]), b"m OK")
        self.assertEqual(code(moved, b"COPYUID").split()[1:], [b"1", b"4"])
        self.assertIn(b"* 1 EXPUNGE", moved)
        self.assertEqual(fetched, [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 3)",
                                   b"* 3 FETCH (UID 4)", b"f OK FETCH completed"])


class FetchTests(MessageTestCase):
    def fetch(self, message: bytes, *commands: bytes, flags: bytes = b"") -> list[bytes]:
        """
        Append C{message}, select INBOX and run the FETCH C{commands}
        (tagged f0, f1...): each transcript joined with CRLF.
        """
        raw = self.session()
        self.append(raw, message, flags=flags)
        self.call(raw, b"s", b"SELECT INBOX")
        return [b"\r\n".join(self.call(raw, b"f%d" % n, command))
                for n, command in enumerate(commands)]

    async def test_simpleAttributes(self):
        """
        RFC 3501 7.4.2: FLAGS, INTERNALDATE, RFC822.SIZE and UID.  RFC822.SIZE
        counts the message "as expressed in [RFC-2822] format" (2.3.4), with
        CRLF line ends: one appended with bare LFs reads back in that form,
        and its size is that of what BODY[] gives.
        """
        bare = b"Subject: lf\nFrom: a@example.org\n\nline one\nline two\n"

        def session():
            raw = self.session()
            self.append(raw, flags=b"\\Answered", date=b'"01-Feb-2026 12:00:00 +0000"', tag=b"a")
            self.append(raw, bare, tag=b"b")
            self.call(raw, b"s", b"SELECT INBOX")
            return (self.call(raw, b"f", b"FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)"),
                    b"\r\n".join(self.call(raw, b"g", b"FETCH 2 (RFC822.SIZE BODY.PEEK[])")))

        simple, bare_lf = await self.in_thread(session)
        self.assertSame(simple, [b'* 1 FETCH (FLAGS (\\Answered \\Recent) INTERNALDATE '
                                 b'" 1-Feb-2026 12:00:00 +0000" RFC822.SIZE 1196 UID 1)',
                                 b"f OK FETCH completed"])
        crlf = bare.replace(b"\n", b"\r\n")
        self.assertEqual(bare_lf, b"* 2 FETCH (RFC822.SIZE %d BODY[] {%d}\r\n%s)\r\n"
                                  b"g OK FETCH completed" % (len(crlf), len(crlf), crlf))

    async def test_envelope(self):
        """
        RFC 3501 7.4.2 ENVELOPE: values as written, unfolded, encoded words
        not decoded; Sender and Reply-To are From's when absent or empty;
        a group is a start and an end marker around its members (and an
        empty group is the two markers); absent fields are NIL; a quote in
        a name is escaped (9, quoted-specials).
        """
        message = (b"Date: Tue, 03 Mar 2026 09:08:07 +0100\r\n"
                   b"From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>\r\n"
                   b"Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n und mehr\r\n"
                   b'To: Friends: anna@example.org, "Bob \\"B\\"" <bob@example.org>;,\r\n'
                   b" carol@example.net\r\n"
                   b"Cc: undisclosed-recipients:;\r\n"
                   b"Sender:\r\n"
                   b"Reply-To: Replies <r@example.org>\r\n"
                   b"In-Reply-To: <parent@example.org>\r\n"
                   b"Message-ID: <env@example.org>\r\n"
                   b"\r\nbody\r\n")
        bare = b"Subject: nothing else\r\n\r\nbody\r\n"

        def session():
            raw = self.session()
            self.append(raw, message, tag=b"a")
            self.append(raw, bare, tag=b"b")
            self.call(raw, b"s", b"SELECT INBOX")
            return self.call(raw, b"f", b"FETCH 1:2 ENVELOPE")

        fetched = await self.in_thread(session)
        joerg = b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.org"))'
        self.assertEqual(fetched, [
            b'* 1 FETCH (ENVELOPE ("Tue, 03 Mar 2026 09:08:07 +0100" '
            b'"=?UTF-8?B?R3LDvMOfZQ==?= und mehr" ' + joerg + b" " + joerg + b" "
            b'(("Replies" NIL "r" "example.org")) '
            b'((NIL NIL "Friends" NIL)(NIL NIL "anna" "example.org")'
            b'("Bob \\"B\\"" NIL "bob" "example.org")(NIL NIL NIL NIL)'
            b'(NIL NIL "carol" "example.net")) '
            b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL '
            b'"<parent@example.org>" "<env@example.org>"))',
            b'* 2 FETCH (ENVELOPE (NIL "nothing else" NIL NIL NIL NIL NIL NIL NIL NIL))',
            b"f OK FETCH completed"])

    async def test_bodyStructure(self):
        """
        RFC 3501 7.4.2: BODY and BODYSTRUCTURE of a multipart/mixed message
        holding a text part, a message/rfc822 part (with the ENVELOPE, the
        body structure and the line count of the message it carries) and
        an attachment.  A multipart's parts follow one another without a
        space; BODYSTRUCTURE adds the extension data (MD5, disposition,
        language, location; for the multipart its parameters).  A part's
        body ends before the CRLF that precedes the next boundary (RFC 2046
        5.1.1), so its last line has no line break and is counted anyway.
        """
        fetched = await self.in_thread(self.fetch, MULTIPART, b"FETCH 1 (BODY BODYSTRUCTURE)")
        text = b'("text" "plain" ("charset" "UTF-8") NIL NIL "quoted-printable" 40 2'
        inner = b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1'
        rfc822 = b'("message" "rfc822" NIL NIL "forwarded" "7bit" 114 ' + _INNER_ENVELOPE
        data = b'("application" "octet-stream" ("name" "data.bin") NIL NIL "base64" 8'
        body = (b"(" + text + b")" + rfc822 + b" " + inner + b") 5)" + data + b') "mixed")')
        structure = (b"(" + text + b" NIL NIL NIL NIL)" + rfc822 + b" " + inner
                     + b" NIL NIL NIL NIL) 5 NIL NIL NIL NIL)" + data
                     + b' NIL ("attachment" ("filename" "data.bin")) NIL NIL)'
                     + b' "mixed" ("boundary" "outer") NIL NIL NIL)')
        self.assertEqual(fetched, [b"* 1 FETCH (BODY " + body + b" BODYSTRUCTURE " + structure
                                   + b")\r\nf0 OK FETCH completed"])

    async def test_sectionsOfNestedMessage(self):
        """
        RFC 3501 6.4.5: BODY[], HEADER and TEXT of the whole message; part
        1 and its MIME header; part 2, a message/rfc822, whole, and its
        message's part 1 (2.1), HEADER and TEXT; part 3.  A part that does
        not exist is empty (RFC 3501 has no rule; RFC 9051 lets it be NIL).
        """
        fetched = await self.in_thread(
            self.fetch, MULTIPART,
            b"FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT])",
            b"FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.1] "
            b"BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[3] BODY.PEEK[4])")
        whole, parts = fetched
        text = MULTIPART[len(_MULTIPART_HEADER):]
        self.assertEqual(whole, b"* 1 FETCH (BODY[] {%d}\r\n%s BODY[HEADER] {%d}\r\n%s"
                                b" BODY[TEXT] {%d}\r\n%s)\r\nf0 OK FETCH completed"
                         % (len(MULTIPART), MULTIPART, len(_MULTIPART_HEADER),
                            _MULTIPART_HEADER, len(text), text))
        one_mime = (b"Content-Type: text/plain; charset=UTF-8\r\n"
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        two = _INNER + b"<p>inner</p>"
        nil_or_empty = (b" BODY[4] {0}\r\n)", b" BODY[4] NIL)", b' BODY[4] "")')
        self.assertIn(parts, [
            b"* 1 FETCH (BODY[1] {40}\r\nGr=C3=BC=C3=9Fe aus Berlin\r\nzweite Zeile"
            b" BODY[1.MIME] {%d}\r\n%s BODY[2] {%d}\r\n%s BODY[2.1] {12}\r\n<p>inner</p>"
            b" BODY[2.HEADER] {%d}\r\n%s BODY[2.TEXT] {12}\r\n<p>inner</p>"
            b" BODY[3] {8}\r\nAAECAw==%s\r\nf1 OK FETCH completed"
            % (len(one_mime), one_mime, len(two), two, len(_INNER), _INNER, end)
            for end in nil_or_empty])

    async def test_headerFields(self):
        """
        RFC 3501 6.4.5: HEADER.FIELDS gives the named fields (any case,
        every occurrence, folded as written) in their order in the message,
        then the blank line; HEADER.FIELDS.NOT all the others; a name that
        is not there adds nothing; part 2's HEADER.FIELDS is about the
        message it carries.
        """
        message = (b"Received: from a by b; Mon, 2 Feb 2026 10:00:00 +0000\r\n"
                   b"Subject: folded\r\n subject line\r\n"
                   b"From: a@example.org\r\n"
                   b"Received: from c by d; Mon, 2 Feb 2026 10:00:01 +0000\r\n"
                   b"\r\nbody\r\n")

        def session():
            raw = self.session()
            self.append(raw, message, tag=b"a")
            self.append(raw, MULTIPART, tag=b"b")
            self.call(raw, b"s", b"SELECT INBOX")
            return [b"\r\n".join(self.call(raw, tag, command)) for tag, command in (
                (b"f", b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject RECEIVED X-None)] "
                       b"BODY.PEEK[HEADER.FIELDS.NOT (Received Subject)] "
                       b"BODY.PEEK[HEADER.FIELDS (X-None)])"),
                (b"g", b"FETCH 2 BODY.PEEK[2.HEADER.FIELDS (Subject)]"))]

        fields, inner = await self.in_thread(session)
        chosen = (b"Received: from a by b; Mon, 2 Feb 2026 10:00:00 +0000\r\n"
                  b"Subject: folded\r\n subject line\r\n"
                  b"Received: from c by d; Mon, 2 Feb 2026 10:00:01 +0000\r\n\r\n")
        others = b"From: a@example.org\r\n\r\n"
        self.assertSame(fields, b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT RECEIVED X-NONE)] {%d}"
                                b"\r\n%s BODY[HEADER.FIELDS.NOT (RECEIVED SUBJECT)] {%d}\r\n%s"
                                b" BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n)\r\n"
                                b"f OK FETCH completed"
                        % (len(chosen), chosen, len(others), others))
        subject = b"Subject: Inner subject\r\n\r\n"
        self.assertSame(inner, b"* 2 FETCH (BODY[2.HEADER.FIELDS (SUBJECT)] {%d}\r\n%s)\r\n"
                               b"g OK FETCH completed" % (len(subject), subject))

    async def test_partial(self):
        """
        RFC 3501 6.4.5 and 7.4.2: <origin.count> gives at most count octets
        from origin, and the answer names only the origin; an origin past
        the end gives an empty string.
        """
        fetched = await self.in_thread(
            self.fetch, MESSAGE,
            b"FETCH 1 (BODY.PEEK[]<0.10> BODY.PEEK[]<1190.100> BODY.PEEK[]<100000.5> "
            b"BODY.PEEK[TEXT]<3.6> BODY.PEEK[HEADER]<0.4>)")
        self.assertEqual(fetched, [b"* 1 FETCH (BODY[]<0> {10}\r\nFrom: Bob "
                                   b" BODY[]<1190> {6}\r\nBye.\r\n BODY[]<100000> {0}\r\n"
                                   b" BODY[TEXT]<3> {6}\r\nAlice, BODY[HEADER]<0> {4}\r\nFrom)"
                                   b"\r\nf0 OK FETCH completed"])

    async def test_rfc822Items(self):
        """
        RFC 3501 6.4.5: RFC822 is BODY[] and RFC822.TEXT is BODY[TEXT]
        (both set \\Seen), RFC822.HEADER is BODY.PEEK[HEADER]; each is
        answered under its own name (7.4.2).  A FETCH that sets \\Seen
        also tells the new flags.
        """
        fetched = await self.in_thread(
            self.fetch, MESSAGE, b"FETCH 1 RFC822.HEADER", b"FETCH 1 RFC822.TEXT",
            b"FETCH 1 RFC822", b"FETCH 1 (RFC822 FLAGS)")
        header, text, whole, with_flags = fetched
        self.assertEqual(header, b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s)\r\nf0 OK FETCH completed"
                         % (len(_HEADER), _HEADER))
        self.assertSame(text, b"* 1 FETCH (RFC822.TEXT {%d}\r\n%s FLAGS (\\Seen \\Recent))\r\n"
                              b"f1 OK FETCH completed" % (len(_TEXT), _TEXT))
        self.assertRegex(normal(whole), re.escape(b"* 1 FETCH (RFC822 {1196}\r\n" + MESSAGE)
                         + rb"( FLAGS \(\\Recent \\Seen\))?\)\r\nf2 OK FETCH completed\Z")
        self.assertSame(with_flags, b"* 1 FETCH (RFC822 {1196}\r\n%s FLAGS (\\Seen \\Recent))"
                                    b"\r\nf3 OK FETCH completed" % MESSAGE)

    async def test_bodySetsSeen(self):
        """
        RFC 3501 6.4.5: BODY[section] sets \\Seen, and the FETCH tells the
        changed flags (7.4.2, FLAGS); BODY.PEEK does not.  UID FETCH
        answers with the UID (6.4.8).
        """
        def session():
            raw = self.session()
            self.append(raw, tag=b"a")
            self.append(raw, tag=b"b")
            self.call(raw, b"s", b"SELECT INBOX")
            return [b"\r\n".join(self.call(raw, tag, command)) for tag, command in (
                (b"f", b"FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"),
                (b"g", b"FETCH 1 FLAGS"),
                (b"h", b"FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]"),
                (b"i", b"UID FETCH 2 BODY[1]<0.2>"),
                (b"j", b"FETCH 1:2 FLAGS"))]

        peeked, unseen, seen, by_uid, flags = await self.in_thread(session)
        self.assertSame(peeked, b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {24}\r\n"
                                b"Subject: Hello there\r\n\r\n)\r\nf OK FETCH completed")
        self.assertSame(unseen, b"* 1 FETCH (FLAGS (\\Recent))\r\ng OK FETCH completed")
        self.assertSame(seen, b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {24}\r\n"
                              b"Subject: Hello there\r\n\r\n FLAGS (\\Seen \\Recent))\r\n"
                              b"h OK FETCH completed")
        self.assertSame(by_uid, b"* 2 FETCH (UID 2 BODY[1]<0> {2}\r\nHi FLAGS (\\Seen \\Recent))"
                                b"\r\ni OK FETCH completed")
        self.assertSame(flags, b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
                               b"* 2 FETCH (FLAGS (\\Seen \\Recent))\r\nj OK FETCH completed")

    async def test_macros(self):
        """
        RFC 3501 6.4.5: ALL is (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE),
        FAST is (FLAGS INTERNALDATE RFC822.SIZE), FULL is ALL and BODY.
        """
        fetched = await self.in_thread(
            lambda: self.fetch(MESSAGE, b"FETCH 1 INTERNALDATE", b"FETCH 1 ALL", b"FETCH 1 FAST",
                               b"FETCH 1 FULL", flags=b"\\Flagged"))
        date = re.fullmatch(rb'\* 1 FETCH \(INTERNALDATE ("[^"]+")\)\r\nf0 OK FETCH completed',
                            fetched[0])
        self.assertIsNotNone(date, fetched[0])
        fast = b"* 1 FETCH (FLAGS (\\Flagged \\Recent) INTERNALDATE %s RFC822.SIZE 1196" % date[1]
        self.assertSame(fetched[1:], [
            fast + b" ENVELOPE " + _ENVELOPE + b")\r\nf1 OK FETCH completed",
            fast + b")\r\nf2 OK FETCH completed",
            fast + b" ENVELOPE " + _ENVELOPE + b" BODY " + _BODY + b")\r\nf3 OK FETCH completed"])

    async def test_eightBitHeader(self):
        """
        A header with 8-bit bytes (UTF-8, RFC 6532, and a stray Latin-1
        byte): an ENVELOPE string with 8-bit octets cannot be quoted (RFC
        3501 9, QUOTED-CHAR is 7-bit) and is sent as a literal; sections
        give the bytes as stored; SEARCH CHARSET UTF-8 finds the name.
        """
        message = (b"From: J\xc3\xb6rg <j@example.org>\r\n"
                   b"Subject: Caf\xc3\xa9\r\n"
                   b"X-Junk: \xe9t\xe9\r\n"
                   b"\r\nhi\r\n")

        def session():
            raw = self.session()
            self.append(raw, message)
            self.call(raw, b"s", b"SELECT INBOX")
            return (b"\r\n".join(self.call(raw, b"f", b"FETCH 1 (RFC822.SIZE ENVELOPE "
                                                     b"BODY.PEEK[HEADER.FIELDS (X-Junk)])")),
                    self.call(raw, b"g", b"SEARCH CHARSET UTF-8 FROM {5+}\r\nJ\xc3\xb6rg"),
                    self.call(raw, b"h", b"SEARCH CHARSET UTF-8 SUBJECT {5+}\r\ncaf\xc3\xa9"))

        fetched, by_name, by_subject = await self.in_thread(session)
        jorg = b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.org"))'
        self.assertSame(fetched, b"* 1 FETCH (RFC822.SIZE %d ENVELOPE (NIL {5}\r\nCaf\xc3\xa9 "
                                 b"%s %s %s NIL NIL NIL NIL NIL) BODY[HEADER.FIELDS (X-JUNK)] "
                                 b"{15}\r\nX-Junk: \xe9t\xe9\r\n\r\n)\r\nf OK FETCH completed"
                        % (len(message), jorg, jorg, jorg))
        self.assertEqual(by_name, [b"* SEARCH 1", b"g OK SEARCH completed"])
        self.assertEqual(by_subject, [b"* SEARCH 1", b"h OK SEARCH completed"])


def _message(sender: bytes, subject: bytes, extra: bytes = b"", body: bytes = b"hello\r\n"):
    return b"From: " + sender + b"\r\nSubject: " + subject + b"\r\n" + extra + b"\r\n" + body


#: The folder SearchTests search: (message, flags, internal date).  Their
#: UIDs are 2 to 5, their sizes 119, 563, 66 and 77 octets.
_FOLDER = (
    (_message(b"=?ISO-8859-1?Q?J=F6rg?= <joerg@example.org>",
              b"=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Berlin", b"X-Tag: \r\n"),
     b"\\Seen", b"01-Feb-2026 12:00:00 +0000"),
    (_message(b"Bob <bob@example.org>", b"Meeting", b"X-Tag: yes\r\n", b"x" * 500 + b"\r\n"),
     b"\\Flagged $Work", b"10-Feb-2026 12:00:00 +0000"),
    (_message(b"Carol <carol@example.net>", b"meeting notes"),
     b"\\Deleted \\Seen", b"20-Feb-2026 12:00:00 +0000"),
    (_message(b"Dan <dan@example.com>", b"=?UTF-8?B?0J/RgNC40LLQtdGC?="),
     b"", b"20-Feb-2026 23:00:00 +0000"),
)


class SearchTests(MessageTestCase):
    def search(self, *searches: bytes) -> list[list[bytes]]:
        """
        Run each SEARCH (tagged s0, s1...) in a folder of L{_FOLDER}, whose
        UIDs differ from the sequence numbers.
        """
        raw = self.session()
        self.append(raw, flags=b"\\Deleted", tag=b"x")
        self.call(raw, b"y", b"SELECT INBOX")
        self.call(raw, b"z", b"EXPUNGE")
        for n, (message, flags, date) in enumerate(_FOLDER):
            self.append(raw, message, flags=flags, date=b'"%s"' % date, tag=b"a%d" % n)
        sizes = self.call(raw, b"f", b"FETCH 1:* (RFC822.SIZE)")
        assert sizes[:-1] == [b"* %d FETCH (RFC822.SIZE %d)" % (n + 1, len(m))
                              for n, (m, _, _) in enumerate(_FOLDER)], sizes
        return [self.call(raw, b"s%d" % n, command) for n, command in enumerate(searches)]

    def assertFound(self, answers: list[list[bytes]], expected: list[bytes]) -> None:
        """
        Each answer is one untagged SEARCH with the expected numbers (in
        any order: RFC 3501 7.2.5 names none) and a tagged OK.
        """
        found = []
        for answer in answers:
            if len(answer) == 2 and answer[0].split()[:2] == [b"*", b"SEARCH"]:
                found.append([b" ".join(sorted(answer[0].split()[2:], key=int)),
                              status(answer[1])])
            else:
                found.append(answer)
        self.assertEqual(found, [[numbers, b"s%d OK" % n] for n, numbers in enumerate(expected)])

    async def test_searchSetsAndFlags(self):
        """
        RFC 3501 6.4.4: ALL; sequence sets, where "*" is the last message;
        UID sets, where a range with "*" holds the last UID even when the
        other end is higher (6.4.8, 9 seq-range); the flag keys, KEYWORD
        and UNKEYWORD; keys in a row all apply.
        """
        answers = await self.in_thread(
            self.search, b"SEARCH ALL", b"SEARCH 2:*", b"SEARCH *", b"SEARCH 1,3:4",
            b"SEARCH UID 4:*", b"SEARCH UID 100:*", b"SEARCH SEEN", b"SEARCH UNSEEN",
            b"SEARCH DELETED", b"SEARCH FLAGGED", b"SEARCH KEYWORD $Work",
            b"SEARCH UNKEYWORD $Work", b"SEARCH UNDELETED UNFLAGGED", b"SEARCH ANSWERED")
        self.assertFound(answers, [b"1 2 3 4", b"2 3 4", b"4", b"1 3 4", b"3 4", b"4", b"1 3",
                                   b"2 4", b"3", b"2", b"2", b"1 3 4", b"1 4", b""])

    async def test_searchEncodedWords(self):
        """
        RFC 3501 6.4.4: "[MIME-HDRS] strings in [RFC-2822]/[MIME-IMB]
        headers, MUST be decoded before comparing text in a [CHARSET] other
        than US-ASCII": SUBJECT and FROM in UTF-8 (given in literals) match
        RFC 2047 encoded words, in UTF-8 or ISO-8859-1, ignoring case.  An
        unknown charset is NO, not BAD, with [BADCHARSET] listing the known
        ones (6.4.4, 7.1).
        """
        answers = await self.in_thread(
            self.search, b"SEARCH CHARSET UTF-8 SUBJECT {8+}\r\nGR\xc3\x9c\xc3\x9fE ",
            b"SEARCH CHARSET UTF-8 FROM {5+}\r\nj\xc3\xb6rg",
            b"SEARCH CHARSET UTF-8 SUBJECT {10+}\r\n\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5",
            b"SEARCH SUBJECT MEETING", b"SEARCH CHARSET US-ASCII FROM example",
            b"SEARCH CHARSET X-UNKNOWN ALL")
        self.assertFound(answers[:5], [b"1", b"1", b"4", b"2 3", b"1 2 3 4"])
        self.assertEqual(len(answers[5]), 1, answers[5])
        self.assertTrue(answers[5][0].startswith(b"s5 NO [BADCHARSET"), answers[5])
        self.assertIn(b"UTF-8", code(answers[5], b"BADCHARSET"))

    async def test_searchCombined(self):
        """
        RFC 3501 6.4.4: OR, NOT and parenthesized lists; LARGER and SMALLER
        by RFC822.SIZE; SINCE, BEFORE and ON by the internal date, its
        time disregarded; HEADER with an empty string matches every message
        that has the field.
        """
        answers = await self.in_thread(
            self.search, b"SEARCH OR FLAGGED DELETED", b"SEARCH NOT SEEN",
            b"SEARCH (OR SEEN FLAGGED) NOT DELETED", b"SEARCH OR (SEEN DELETED) (FROM dan)",
            b"SEARCH NOT 2:3", b"SEARCH LARGER 118", b"SEARCH SMALLER 77", b"SEARCH LARGER 119",
            b"SEARCH SINCE 10-Feb-2026", b"SEARCH BEFORE 10-Feb-2026", b"SEARCH ON 20-Feb-2026",
            b'SEARCH HEADER X-Tag ""', b"SEARCH HEADER X-Tag yes", b'SEARCH HEADER X-None ""')
        self.assertFound(answers, [b"2 3", b"2 4", b"1 2", b"3 4", b"1 4", b"1 2", b"3", b"2",
                                   b"2 3 4", b"1", b"3 4", b"1 2", b"2", b""])

    async def test_uidSearch(self):
        """
        RFC 3501 6.4.8: UID SEARCH answers UIDs; its keys are the same, so a
        bare sequence set still means sequence numbers and UID a UID set.
        """
        answers = await self.in_thread(
            self.search, b"UID SEARCH ALL", b"UID SEARCH FLAGGED", b"UID SEARCH 2:3",
            b"UID SEARCH UID 2:3", b"UID SEARCH *", b"UID SEARCH SUBJECT meeting")
        self.assertFound(answers, [b"2 3 4 5", b"3", b"3 4", b"2 3", b"5", b"3 4"])
