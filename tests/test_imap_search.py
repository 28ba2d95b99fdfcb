"""
Tests for L{mailsrv.imap.search}: evaluating SEARCH keys (RFC 3501 6.4.4).
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.imap import search
from mailsrv.imap.parser import Literal, SearchKey, SequenceSet, parse_command
from mailsrv.imap.search import Candidate, body_text, matches, needs_body, needs_header
from mailsrv.store.interfaces import MessageInfo

STAR = None
LARGEST_SEQ = 5
LARGEST_UID = 50

SIMPLE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Sun, 10 Mar 2024 23:30:00 -0500\r\n"
    b"X-Tag: first\r\n"
    b"X-Tag: second\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
)

ENCODED_SUBJECT = (
    b"From: carol@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus Berlin\r\n"
    b"\r\n"
    b"Hallo.\r\n"
)

FOLDED_SUBJECT = (
    b"Subject: a subject that is long\r\n"
    b"\tenough to be folded\r\n"
    b"\r\n"
    b"body\r\n"
)

MIXED = (
    b"From: dave@example.org\r\n"
    b"Subject: attachments\r\n"
    b"Content-Type: multipart/mixed; boundary=b1\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes("Meeting at the caf\u00e9 at noon.\n".encode()).replace(b"\n", b"\r\n")
    + b"--b1\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Bring the cr=E8me br=FBl=E9e.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream; name=secret.bin\r\n"
    b"Content-Disposition: attachment; filename=secret.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes(b"launch codes inside").replace(b"\n", b"\r\n")
    + b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: forwarded\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"The forwarded words.\r\n"
    b"--b1--\r\n"
)


def key(op: str, *args) -> SearchKey:
    return SearchKey(op, args)


def seqs(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


def candidate(message: bytes = SIMPLE, *, seq: int = 2, uid: int = 20, size: int = 100,
              internal_date: datetime = datetime(2024, 3, 10, 23, 59, 59, tzinfo=UTC),
              flags: tuple[str, ...] = (), recent: bool = False) -> Candidate:
    """
    A message as the session would hand it over, header and body text filled in.
    """
    header = message.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    info = MessageInfo(uid=uid, size=size, internal_date=internal_date.timestamp(),
                       flags=frozenset(flags), modseq=1)
    return Candidate(seq=seq, info=info, recent=recent, header=header, text=body_text(message))


def match(search_key: SearchKey, c: Candidate) -> bool:
    return matches(search_key, c, largest_seq=LARGEST_SEQ, largest_uid=LARGEST_UID)


class SetTests(SynchronousTestCase):
    def test_all(self):
        """
        ALL matches every message (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("ALL"), candidate()))

    def test_sequenceSet(self):
        """
        A sequence set matches the message numbers in it, "*" being the largest (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("SEQ", seqs((1, 3))), candidate(seq=2)))
        self.assertFalse(match(key("SEQ", seqs((1, 1), (3, 4))), candidate(seq=2)))
        self.assertTrue(match(key("SEQ", seqs((STAR, STAR))), candidate(seq=LARGEST_SEQ)))
        self.assertFalse(match(key("SEQ", seqs((STAR, STAR))), candidate(seq=4)))
        self.assertTrue(match(key("SEQ", seqs((STAR, 4))), candidate(seq=5)))
        self.assertFalse(match(key("SEQ", seqs((STAR, 4))), candidate(seq=3)))

    def test_uidSet(self):
        """
        UID matches the UIDs in the set, "*" being the largest UID in the folder (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("UID", seqs((10, STAR))), candidate(uid=LARGEST_UID)))
        self.assertFalse(match(key("UID", seqs((STAR, STAR))), candidate(uid=20)))
        self.assertTrue(match(key("UID", seqs((1, 4294967295))), candidate(uid=20)))
        self.assertFalse(match(key("UID", seqs((2, 19), (21, 30))), candidate(uid=20)))


class FlagTests(SynchronousTestCase):
    def test_systemFlags(self):
        """
        SEEN and UNSEEN (FLAG / NOFLAG \\Seen) test the flag (RFC 3501 6.4.4).
        """
        seen = candidate(flags=("\\Seen", "\\Flagged"))
        self.assertTrue(match(key("FLAG", "\\Seen"), seen))
        self.assertFalse(match(key("NOFLAG", "\\Seen"), seen))
        self.assertFalse(match(key("FLAG", "\\Deleted"), seen))
        self.assertTrue(match(key("NOFLAG", "\\Deleted"), seen))

    def test_keywordsIgnoreCase(self):
        """
        KEYWORD and UNKEYWORD compare keywords, which are atoms, without regard to case (RFC 3501
        6.4.4).
        """
        tagged = candidate(flags=("$Forwarded",))
        self.assertTrue(match(key("FLAG", "$forwarded"), tagged))
        self.assertFalse(match(key("NOFLAG", "$FORWARDED"), tagged))
        self.assertFalse(match(key("FLAG", "$Junk"), tagged))

    def test_recent(self):
        """
        RECENT matches messages recent in this session (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("RECENT"), candidate(recent=True)))
        self.assertFalse(match(key("RECENT"), candidate(recent=False)))


class HeaderTests(SynchronousTestCase):
    def test_substringIgnoringCase(self):
        """
        HEADER matches a substring of the field's value without regard to case (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("HEADER", "SUBJECT", "TERLY REP"), candidate()))
        self.assertFalse(match(key("HEADER", "SUBJECT", "annual"), candidate()))

    def test_onlyThatField(self):
        """
        HEADER looks at the named field only (RFC 3501 6.4.4).
        """
        self.assertFalse(match(key("HEADER", "FROM", "bob"), candidate()))
        self.assertTrue(match(key("HEADER", "TO", "bob"), candidate()))

    def test_anyOccurrence(self):
        """
        A field that occurs twice matches through either occurrence (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("HEADER", "X-TAG", "second"), candidate()))

    def test_addresses(self):
        """
        FROM matches the display name as well as the address (RFC 3501 6.4.4 "FROM <string>").
        """
        self.assertTrue(match(key("HEADER", "FROM", "alice example"), candidate()))
        self.assertTrue(match(key("HEADER", "FROM", "alice@example.org"), candidate()))

    def test_encodedWords(self):
        """
        Encoded words are decoded before matching, and case is folded fully (RFC 3501 6.4.4,
        RFC 2047).
        """
        message = candidate(ENCODED_SUBJECT)
        self.assertTrue(match(key("HEADER", "SUBJECT", "grüße aus"), message))
        self.assertTrue(match(key("HEADER", "SUBJECT", "GRÜSSE"), message))
        self.assertFalse(match(key("HEADER", "SUBJECT", "=C3=BC"), message))

    def test_emptyValue(self):
        """
        An empty string matches every message that has the field (RFC 3501 6.4.4 "HEADER").
        """
        self.assertTrue(match(key("HEADER", "X-TAG", ""), candidate()))
        self.assertFalse(match(key("HEADER", "X-TAG", ""), candidate(ENCODED_SUBJECT)))

    def test_foldedHeader(self):
        """
        A folded field is unfolded before matching, its fold reading as a space (RFC 3501 6.4.4,
        RFC 5322 2.2.3).
        """
        self.assertTrue(match(key("HEADER", "SUBJECT", "long enough"), candidate(FOLDED_SUBJECT)))

    def test_rawEightBitFoldsFully(self):
        """
        A raw UTF-8 value (RFC 6532) is case-folded fully too: ASCII keys can
        match characters that are not ASCII (RFC 3501 6.4.4).
        """
        message = candidate("Subject: Stra\u00dfe und \u212aatze\r\n\r\nx\r\n".encode())
        self.assertTrue(match(key("HEADER", "SUBJECT", "strasse"), message))
        self.assertTrue(match(key("HEADER", "SUBJECT", "katze"), message))
        self.assertFalse(match(key("HEADER", "SUBJECT", "hund"), message))

    def test_wordsOfTheKeyOverAFold(self):
        """
        Each word of the key may sit on another line of a folded field; the
        key matches only when the words meet in the unfolded value.
        """
        self.assertTrue(match(key("HEADER", "SUBJECT", "is long enough"),
                              candidate(FOLDED_SUBJECT)))
        self.assertFalse(match(key("HEADER", "SUBJECT", "enough long"),
                               candidate(FOLDED_SUBJECT)))

    def test_noHeader(self):
        """
        A candidate without its header loaded matches no header key (RFC 3501 6.4.4).
        """
        bare = Candidate(seq=1, info=candidate().info, recent=False)
        self.assertFalse(match(key("HEADER", "SUBJECT", ""), bare))
        self.assertFalse(match(key("TEXT", "report"), bare))


class NarrowTests(SynchronousTestCase):
    """
    L{search.narrow} may keep messages that do not match, but never drops
    one that does; for a HEADER key it keeps exactly those that match.
    """

    HEADERS = [
        SIMPLE, ENCODED_SUBJECT, FOLDED_SUBJECT, MIXED,
        b"From: =?utf-8?q?Zoe?= <z@example.org>\r\nSubject: plain words\r\n\r\n",
        b"Subject: =?utf-8?b?WmVwcGVsaW4=?=\r\n\r\n",
        b"Subject: folded\r\n =?utf-8?q?Zeppelin?=\r\n\r\n",
        "Subject: Stra\u00dfe\r\n\r\n".encode(),
        b"X-Subject: zeppelin\r\nSubject: other\r\n\r\n",
        b"",
        # RFC 5322 1.2.2: names are case-insensitive; 4.5: obsolete white
        # space before the colon.
        b"sUbJeCt: ZEPPELIN\r\n\r\n",
        b"Subject \t: zeppelin\r\n\r\n",
        # Only the second of two fields matches; a folded encoded word.
        b"Subject: none\r\nSubject: a zeppelin\r\n\r\n",
        b"Subject: =?utf-8?q?one?=\r\n =?utf-8?b?WmVwcGVsaW4=?=\r\n\r\n",
        # A header block without its blank line, then one that (wrongly)
        # starts with white space: neither continues the other.
        b"Subject: plain",
        b" zeppelin\r\n\r\n",
        "Subject: Gr\u00fc\u00dfe, zeppelin\r\n\r\n".encode(),
    ]
    KEYS = ["report", "zeppelin", "Zeppelin", "long enough", "", " ", "strasse",
            "stra\u00dfe", "gr\u00fc\u00dfe", "plain", "other", "folded zeppelin"]

    def test_neverDropsAMatch(self):
        headers = [h.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if h else b""
                   for h in self.HEADERS]
        for field in ("SUBJECT", "FROM", "X-SUBJECT"):
            for wanted in self.KEYS:
                search_key = key("HEADER", field, wanted)
                narrowed = search.narrow(key("AND", search_key, key("ALL")), headers)
                for i, header in enumerate(headers):
                    c = candidate(header or b"\r\n")
                    c.header = header
                    if match(search_key, c):
                        self.assertTrue(narrowed is None or i in narrowed, (field, wanted, i))

    def test_headerExactly(self):
        """
        For a HEADER key, narrowing keeps exactly the messages that match,
        whatever the chunks the blocks are scanned in.
        """
        headers = [h.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if b"\r\n\r\n" in h else h
                   for h in self.HEADERS]
        headers = headers * (search._SCAN_CHUNK // len(headers) + 2)
        for field in ("SUBJECT", "X-SUBJECT", "From"):
            for wanted in self.KEYS:
                if not wanted.strip():
                    continue
                search_key = key("HEADER", field, wanted)
                expected = set()
                for i, header in enumerate(headers):
                    c = candidate(header or b"\r\n")
                    c.header = header
                    if match(search_key, c):
                        expected.add(i)
                self.assertEqual(search.narrow(search_key, headers), expected, (field, wanted))

    def test_orNarrows(self):
        """
        An OR of two narrowing keys keeps what either keeps; with one that
        does not narrow, everything may match.
        """
        headers = [b"Subject: one\r\n\r\n", b"Subject: two\r\n\r\n", b"Subject: three\r\n\r\n"]
        one, two = key("HEADER", "SUBJECT", "one"), key("HEADER", "SUBJECT", "two")
        self.assertEqual(search.narrow(key("OR", one, two), headers), {0, 1})
        self.assertIsNone(search.narrow(key("OR", one, key("ALL")), headers))

    def test_dropsMostMessages(self):
        headers = [b"Subject: message %d\r\nFrom: =?utf-8?q?A?= <a@b>\r\n\r\n" % n
                   for n in range(100)]
        headers[42] = b"Subject: the zeppelin\r\n\r\n"
        self.assertEqual(search.narrow(key("HEADER", "SUBJECT", "Zeppelin"), headers), {42})
        self.assertIsNone(search.narrow(key("NOT", key("HEADER", "SUBJECT", "x")), headers))


class BodyTests(SynchronousTestCase):
    def test_base64Text(self):
        """
        BODY matches the decoded text of a base64 text part (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("BODY", "CAFÉ at noon"), candidate(MIXED)))

    def test_quotedPrintableCharset(self):
        """
        BODY matches quoted-printable text decoded through its charset (RFC 3501 6.4.4, RFC 2045).
        """
        self.assertTrue(match(key("BODY", "crème brûlée"), candidate(MIXED)))

    def test_notInAttachment(self):
        """
        BODY does not look into a non-text attachment, decoded or encoded (RFC 3501 6.4.4).
        """
        encoded = base64.encodebytes(b"launch codes inside").decode().strip()
        self.assertFalse(match(key("BODY", "launch codes"), candidate(MIXED)))
        self.assertFalse(match(key("BODY", encoded), candidate(MIXED)))

    def test_undeclaredCharset(self):
        """
        8-bit text without a declared charset is read as UTF-8, as senders mean it (RFC 3501
        6.4.4).
        """
        message = "Subject: plain\r\n\r\nGrüße aus Köln\r\n".encode()
        self.assertTrue(match(key("BODY", "köln"), candidate(message)))

    def test_attachedMessage(self):
        """
        BODY matches the text of an attached message (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("BODY", "forwarded words"), candidate(MIXED)))

    def test_notHeader(self):
        """
        BODY does not match the message's own header (RFC 3501 6.4.4).
        """
        self.assertFalse(match(key("BODY", "Quarterly"), candidate()))
        self.assertTrue(match(key("BODY", "numbers"), candidate()))

    def test_text(self):
        """
        TEXT matches the header, decoded, or the body (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("TEXT", "quarterly"), candidate()))
        self.assertTrue(match(key("TEXT", "numbers are"), candidate()))
        self.assertTrue(match(key("TEXT", "grüße"), candidate(ENCODED_SUBJECT)))
        self.assertFalse(match(key("TEXT", "nowhere"), candidate()))

    def test_capped(self):
        """
        The searchable text of a huge message is capped, so a search cannot take forever (RFC 3501
        6.4.4).
        """
        self.patch(search, "MAX_BODY_TEXT", 10)
        self.assertEqual(body_text(MIXED), "Meeting at")


class BrokenMessageTests(SynchronousTestCase):
    def test_garbage(self):
        """
        Garbage bytes search without raising (RFC 3501 6.4.4 applies to every message).
        """
        junk = bytes(range(256)) * 4 + b"\r\n\r\n\xff\xfe=?x?q?\x00?="
        c = candidate(junk)
        for search_key in (key("TEXT", "needle"), key("SENTON", date(2024, 1, 1)),
                           key("HEADER", "SUBJECT", "")):
            self.assertFalse(match(search_key, c))

    def test_badBase64(self):
        """
        A text part with broken base64 is searched as best it decodes, without raising (RFC 3501
        6.4.4).
        """
        message = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   b"aGVsbG8gd29ybGQ!!!*\r\n")
        self.assertIsInstance(body_text(message), str)

    def test_unknownCharset(self):
        """
        Text in an unknown charset is read as UTF-8 rather than skipped (RFC 3501 6.4.4).
        """
        message = ("Content-Type: text/plain; charset=x-no-such\r\n\r\nda\u00dfs\r\n").encode()
        self.assertIn("daßs", body_text(message))

    def test_badEncodedWords(self):
        """
        Encoded words in an unknown charset or with broken base64 do not raise (RFC 3501 6.4.4,
        RFC 2047).
        """
        message = (b"Subject: =?x-no-such?q?caf=C3=A9?= =?utf-8?b?!!!?=\r\n"
                   b"Date: Mon, 32 Jan 2020 10:00:00 +0000\r\n\r\nbody\r\n")
        c = candidate(message)
        self.assertTrue(match(key("HEADER", "SUBJECT", "café"), c))
        self.assertFalse(match(key("SENTSINCE", date(2000, 1, 1)), c))


class DateTests(SynchronousTestCase):
    def test_internalDate(self):
        """
        BEFORE, ON and SINCE compare the internal date's day, in UTC (RFC 3501 6.4.4).
        """
        last_second = candidate(internal_date=datetime(2024, 3, 10, 23, 59, 59, tzinfo=UTC))
        midnight = candidate(internal_date=datetime(2024, 3, 11, tzinfo=UTC))
        day, next_day = date(2024, 3, 10), date(2024, 3, 11)
        self.assertTrue(match(key("ON", day), last_second))
        self.assertFalse(match(key("ON", next_day), last_second))
        self.assertTrue(match(key("ON", next_day), midnight))
        self.assertTrue(match(key("BEFORE", next_day), last_second))
        self.assertFalse(match(key("BEFORE", day), last_second))
        self.assertFalse(match(key("BEFORE", next_day), midnight))
        self.assertTrue(match(key("SINCE", day), last_second))
        self.assertFalse(match(key("SINCE", next_day), last_second))
        self.assertTrue(match(key("SINCE", next_day), midnight))

    def test_sentDateInItsOwnZone(self):
        """
        SENT* compare the Date: header's day in its own time zone, although in UTC it is the next
        day (RFC 3501 6.4.4).
        """
        c = candidate()  # Sun, 10 Mar 2024 23:30:00 -0500 is 11 March in UTC
        day, next_day = date(2024, 3, 10), date(2024, 3, 11)
        self.assertTrue(match(key("SENTON", day), c))
        self.assertFalse(match(key("SENTON", next_day), c))
        self.assertTrue(match(key("SENTBEFORE", next_day), c))
        self.assertFalse(match(key("SENTBEFORE", day), c))
        self.assertTrue(match(key("SENTSINCE", day), c))
        self.assertFalse(match(key("SENTSINCE", next_day), c))

    def test_noSentDate(self):
        """
        A message without a Date: matches no SENT* key (RFC 3501 6.4.4; Dovecot would use the
        internal date).
        """
        c = candidate(ENCODED_SUBJECT)
        for op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            self.assertFalse(match(key(op, date(2024, 3, 10)), c))


class SizeTests(SynchronousTestCase):
    def test_larger(self):
        """
        LARGER n matches sizes strictly above n (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("LARGER", 99), candidate(size=100)))
        self.assertFalse(match(key("LARGER", 100), candidate(size=100)))

    def test_smaller(self):
        """
        SMALLER n matches sizes strictly below n (RFC 3501 6.4.4).
        """
        self.assertTrue(match(key("SMALLER", 101), candidate(size=100)))
        self.assertFalse(match(key("SMALLER", 100), candidate(size=100)))


class LogicTests(SynchronousTestCase):
    def test_nested(self):
        """
        AND, OR and NOT combine keys to any depth (RFC 3501 6.4.4).
        """
        c = candidate(flags=("\\Seen",), size=100)
        seen_and_small = key("AND", key("FLAG", "\\Seen"), key("SMALLER", 200))
        self.assertTrue(match(seen_and_small, c))
        self.assertFalse(match(key("NOT", seen_and_small), c))
        either = key("OR", key("LARGER", 500), key("NOT", key("FLAG", "\\Deleted")))
        self.assertTrue(match(either, c))
        self.assertFalse(match(key("OR", key("LARGER", 500), key("RECENT")), c))
        self.assertFalse(match(key("AND", either, key("HEADER", "SUBJECT", "nope")), c))

    def test_needsHeader(self):
        """
        Header-reading keys, however deeply nested, ask for the header (RFC 3501 6.4.4).
        """
        self.assertTrue(needs_header(key("NOT", key("OR", key("ALL"),
                                                    key("HEADER", "FROM", "x")))))
        self.assertTrue(needs_header(key("SENTON", date(2024, 1, 1))))
        self.assertTrue(needs_header(key("TEXT", "x")))
        self.assertFalse(needs_header(key("AND", key("BODY", "x"), key("ON", date(2024, 1, 1)))))

    def test_needsBody(self):
        """
        BODY and TEXT, however deeply nested, ask for the body text (RFC 3501 6.4.4).
        """
        self.assertTrue(needs_body(key("AND", key("ALL"), key("NOT", key("BODY", "x")))))
        self.assertTrue(needs_body(key("TEXT", "x")))
        self.assertFalse(needs_body(key("OR", key("HEADER", "TO", "x"), key("LARGER", 1))))


class ParsedCommandTests(SynchronousTestCase):
    def test_parsedSearch(self):
        """
        A SEARCH command as the parser returns it evaluates as written (RFC 3501 6.4.4).
        """
        command = parse_command([
            b"A1 SEARCH CHARSET UTF-8 OR FROM alice SUBJECT {7}",
            Literal(data="grüße".encode(), size=7),
            b" UNSEEN 2:*",
        ])
        charset, search_key = command.args
        self.assertEqual(charset, "UTF-8")
        self.assertTrue(match(search_key, candidate(ENCODED_SUBJECT)))
        self.assertFalse(match(search_key, candidate(ENCODED_SUBJECT, seq=1)))
        self.assertFalse(match(search_key, candidate(ENCODED_SUBJECT, flags=("\\Seen",))))
        self.assertTrue(match(search_key, candidate(SIMPLE)))
