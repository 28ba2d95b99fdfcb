"""
Tests for L{mailsrv.store.summary}: MIME outlines (RFC 2045, 2046) in the
CRLF form IMAP serves (RFC 3501 2.3.4).
"""

import io
import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.store import summary
from mailsrv.store.index import INDEX, FolderIndex, HeaderCache, IndexEntry
from mailsrv.store.maildir import MaildirStore
from mailsrv.store.summary import dumps, loads, outline, read_header
from mailsrv.store.testing import run_now

MIXED = (
    b"From: a@example.org\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer b\"\r\n"
    b"\r\n"
    b"This is the preamble.\r\n"
    b"--outer b\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"\r\n"
    b"plain text\r\n"
    b"two lines\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--inner--\r\n"
    b"--outer b   \r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner message\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--outer b--\r\n"
    b"This is the epilogue.\r\n"
)


def body_of(data: bytes, part) -> bytes:
    return data[part.body_offset:part.body_offset + part.body_size]


class OutlineTests(SynchronousTestCase):
    def test_simpleMessage(self):
        data = b"Subject: hi\r\nFrom: a@example.org\r\n\r\nline 1\r\nline 2\r\n"
        part = outline(data)
        self.assertEqual(part.header, b"Subject: hi\r\nFrom: a@example.org\r\n\r\n")
        self.assertEqual(body_of(data, part), b"line 1\r\nline 2\r\n")
        self.assertEqual((part.body_lines, part.parts), (2, ()))

    def test_bareLineFeedsCountAsCRLF(self):
        """
        Offsets and sizes are those of the CRLF form, which IMAP sends.
        """
        part = outline(b"Subject: hi\n\nline 1\nline 2")
        self.assertEqual(part.header, b"Subject: hi\r\n\r\n")
        self.assertEqual((part.body_offset, part.body_size, part.body_lines), (15, 14, 2))

    def test_nestedMultipartAndMessage(self):
        """
        Preamble and epilogue belong to no part; the CRLF before a delimiter
        belongs to the delimiter; white space after a delimiter is allowed
        (RFC 2046 5.1.1); a message/rfc822 part carries its own outline.
        """
        part = outline(MIXED)
        alternative, attached = part.parts
        plain, html = alternative.parts
        self.assertEqual(body_of(MIXED, plain), b"plain text\r\ntwo lines")
        self.assertEqual(plain.header, b"\r\n")
        self.assertEqual(plain.body_lines, 2)
        self.assertEqual(body_of(MIXED, html), b"<p>html</p>")
        self.assertEqual(html.header, b"Content-Type: text/html\r\n\r\n")
        [inner] = attached.parts
        self.assertEqual(inner.header, b"Subject: inner message\r\n\r\n")
        self.assertEqual(body_of(MIXED, inner), b"inner body")
        self.assertEqual(body_of(MIXED, attached), b"Subject: inner message\r\n\r\ninner body")

    def test_unterminatedMultipart(self):
        data = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n"
                b"\r\ntwo\r\n")
        first, second = outline(data).parts
        self.assertEqual((body_of(data, first), body_of(data, second)), (b"one", b"two\r\n"))

    def test_digestDefaultsToMessage(self):
        data = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                b"Subject: one\r\n\r\nx\r\n--d--\r\n")
        [entry] = outline(data).parts
        self.assertEqual(entry.parts[0].header, b"Subject: one\r\n\r\n")

    def test_headerOnly(self):
        part = outline(b"Subject: no body\r\n")
        self.assertEqual((part.header, part.body_size, part.body_lines),
                         (b"Subject: no body\r\n", 0, 0))

    def test_deepNestingIsBounded(self):
        data = b"Content-Type: message/rfc822\r\n\r\n" * 500 + b"Subject: bottom\r\n\r\nx"
        part = outline(data)
        depth = 0
        while part.parts:
            part = part.parts[0]
            depth += 1
        self.assertEqual(depth, summary.MAX_DEPTH)

    def test_eightBitBoundary(self):
        """
        RFC 2046 5.1.1 boundaries are 7-bit: an 8-bit one leaves the body one
        opaque part instead of failing the outline.
        """
        data = (b'Content-Type: multipart/mixed; boundary="\xff"\r\n\r\n'
                b"--\xff\r\n\r\nx\r\n--\xff--\r\n")
        part = outline(data)
        self.assertEqual((part.parts, part.body_size), ((), len(data) - part.body_offset))

    def test_jsonRoundTrip(self):
        part = outline(MIXED + b"\xff\xfe 8-bit")
        self.assertEqual(loads(dumps(part)), part)


class ReadHeaderTests(SynchronousTestCase):
    """
    L{read_header} gives what L{outline} gives as the header, reading only
    as far as the blank line.
    """

    def assertSameHeader(self, data: bytes) -> None:
        file = io.BytesIO(data)
        self.assertEqual(read_header(file), outline(data).header)

    def test_lineEnds(self):
        for data in (MIXED, MIXED.replace(b"\r\n", b"\n"), b"A: b\n\r\nbody",
                     b"A: b\r\n\nbody", b"A: b\r\r\nC: d\n\nbody", b"\r\nbody",
                     b"\nbody", b"\r\r\nbody\n\n", b"", b"A: b\r\n", b"A: b\r"):
            self.assertSameHeader(data)

    def test_stopsAtTheBlankLine(self):
        data = b"Subject: x\r\n\r\n" + b"y" * 10_000_000
        file = io.BytesIO(data)
        self.assertEqual(read_header(file), b"Subject: x\r\n\r\n")
        self.assertLess(file.tell(), 100_000)

    def test_longHeader(self):
        """
        A header longer than the first read, its blank line split over two
        reads in every way.
        """
        for pad in range(4):
            data = b"X: " + b"x" * (summary._HEADER_READ - 5 + pad) + b"\n\r\nbody"
            self.assertSameHeader(data)
        self.assertSameHeader(b"X: " + b"x" * 100_000)


class IndexTests(SynchronousTestCase):
    def test_indexWithOutlinesInTheMessageTable(self):
        """
        An index written when outlines were a column of the message table
        loses that column and keeps its entries.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        db = sqlite3.connect(folder / INDEX)
        db.executescript("CREATE TABLE message (base TEXT PRIMARY KEY, size INTEGER NOT NULL,"
                         " vsize INTEGER NOT NULL, mtime REAL NOT NULL, modseq INTEGER NOT NULL,"
                         " outline TEXT);"
                         "INSERT INTO message VALUES ('1.x', 1, 1, 0, 5, '[]');")
        db.close()
        index = FolderIndex(folder)
        self.addCleanup(index.close)
        entries, _ = index.load()
        self.assertEqual(list(entries), ["1.x"])
        self.assertEqual(index.outlines({1: "1.x"}), {})
        index.set_outlines({"1.x": (b"\r\n", "[]")})
        self.assertEqual(index.outlines({1: "1.x"}), {1: "[]"})
        self.assertEqual(index.headers({1: "1.x"}), {1: b"\r\n"})

    def test_mostOfTheFolder(self):
        """
        Asking for most of a folder's headers gives the same as asking for
        each; removed messages lose theirs.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        index = FolderIndex(folder)
        self.addCleanup(index.close)
        bases = [f"{n}.x" for n in range(1200)]
        index.update([(b, IndexEntry(1, 1, 0.0, 1)) for b in bases], [], 1)
        index.set_headers({b: b.encode() for b in bases[:1100]})
        for most in (False, True):
            self.assertEqual(index.headers(dict(enumerate(bases[5:1150], 6)), most),
                             {n: b.encode() for n, b in enumerate(bases[5:1100], 6)})
        index.update([], bases[:10], 1)
        self.assertEqual(len(index.headers(dict(enumerate(bases, 1)), True)), 1090)


class StoreOutlineTests(SynchronousTestCase):
    def test_computedOnceThenFromTheIndex(self):
        """
        The store computes an outline on first request and keeps it in the
        folder index, across restarts.
        """
        root = Path(self.mktemp()).absolute()
        store = MaildirStore(root, run_now)
        user = store.user("alice@example.org")
        self.successResultOf(user.append("INBOX", MIXED))
        calls = []
        real = summary.outline
        self.patch(summary, "outline", lambda data: calls.append(1) or real(data))
        first = self.successResultOf(user.outlines("INBOX", [1, 42]))
        self.assertEqual(list(first), [1])
        self.assertEqual(first[1], real(MIXED))
        store.close()
        user = MaildirStore(root, run_now).user("alice@example.org")
        self.assertEqual(self.successResultOf(user.outlines("INBOX", [1])), first)
        self.assertEqual(calls, [1])
        user.close()

    def test_headersReadOnceThenFromTheIndex(self):
        """
        Header blocks are read from the start of the file once, then come
        from the index; an outline computed first stores the header too.
        """
        root = Path(self.mktemp()).absolute()
        store = MaildirStore(root, run_now)
        user = store.user("alice@example.org")
        self.successResultOf(user.append("INBOX", MIXED))
        self.successResultOf(user.append("INBOX", b"Subject: two\n\nbody\n"))
        self.successResultOf(user.outlines("INBOX", [1]))
        calls = []
        real = summary.read_header
        self.patch(summary, "read_header", lambda file: calls.append(1) or real(file))
        expected = {1: outline(MIXED).header, 2: b"Subject: two\r\n\r\n"}
        self.assertEqual(self.successResultOf(user.headers("INBOX", [1, 2, 42])), expected)
        self.assertEqual(calls, [1])
        store.close()
        user = MaildirStore(root, run_now).user("alice@example.org")
        self.assertEqual(self.successResultOf(user.headers("INBOX", [1, 2])), expected)
        self.assertEqual(calls, [1])
        user.close()


class HeaderCacheTests(SynchronousTestCase):
    def test_budget(self):
        """
        Past its budget the cache forgets whole folders, least recently
        used first; removed messages leave it.
        """
        cache = HeaderCache(budget=100)
        cache.put(Path("a"), {"1": b"x" * 40})
        cache.put(Path("b"), {"1": b"y" * 40})
        self.assertEqual(cache.get(Path("a"), {1: "1", 2: "2"}), {1: b"x" * 40})
        cache.put(Path("c"), {"1": b"z" * 40})
        self.assertEqual(cache.get(Path("b"), {1: "1"}), {})
        self.assertEqual(cache.get(Path("a"), {1: "1"}), {1: b"x" * 40})
        cache.drop(Path("a"), ["1"])
        self.assertEqual(cache.get(Path("a"), {1: "1"}), {})
        cache.put(Path("d"), {"1": b"w" * 60})
        self.assertEqual(cache.get(Path("c"), {1: "1"}), {1: b"z" * 40})

    def test_indexServesFromTheCache(self):
        """
        Headers once read or written come from memory, not the database;
        a removed message's header is gone from both.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        index = FolderIndex(folder)
        self.addCleanup(index.close)
        index.update([("1.x", IndexEntry(1, 1, 0.0, 1))], [], 1)
        index.set_headers({"1.x": b"A: b\r\n\r\n"})
        self.patch(index, "_column", lambda *args: self.fail("read the database"))
        self.assertEqual(index.headers({1: "1.x"}, True), {1: b"A: b\r\n\r\n"})
        index.update([], ["1.x"], 1)
        self.assertEqual(index._registry.headers.get(index.path, {1: "1.x"}), {})
