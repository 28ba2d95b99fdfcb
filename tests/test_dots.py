"""
Tests for L{mailsrv.dots}: messages as dot-terminated blocks of CRLF lines
(RFC 5321 4.5.2, RFC 1939 3), cut into chunks anywhere.
"""

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.dots import DotStuffer, LineLimit


def stuffed(chunks, limit=None) -> bytes:
    stuffer = DotStuffer(limit)
    return b"".join(stuffer.stuff(c) for c in chunks) + stuffer.end()


def cuts(message: bytes):
    """
    The message cut in three at every pair of places.
    """
    for first in range(len(message) + 1):
        for second in range(first, len(message) + 1):
            yield (first, second), [message[:first], message[first:second], message[second:]]


class DotStufferTests(SynchronousTestCase):
    def test_chunkBoundariesDoNotMatter(self):
        """
        However the message is cut into chunks, the stuffed stream is the
        same, every line starting with "." gets another.
        """
        message = b".first\r\nx\r\n.\r\n..two\r\nend.\r\n.last"
        expected = b"..first\r\nx\r\n..\r\n...two\r\nend.\r\n..last\r\n.\r\n"
        for where, chunks in cuts(message):
            self.assertEqual(stuffed(chunks), expected, where)

    def test_bareLineFeeds(self):
        """
        Bare LFs become CRLF, a CRLF split between chunks stays one, and a
        lone CR stays as it is (as IMAP serves the same file).
        """
        message = b"a\n.b\r\nc\rd\n\n.e"
        expected = b"a\r\n..b\r\nc\rd\r\n\r\n..e\r\n.\r\n"
        for where, chunks in cuts(message):
            self.assertEqual(stuffed(chunks), expected, where)

    def test_endAfterCRLF(self):
        """
        A message ending in CRLF ends with just ".", an empty one too.
        """
        self.assertEqual(stuffed([b"a\r\n"]), b"a\r\n.\r\n")
        self.assertEqual(stuffed([]), b".\r\n")


class LineLimitTests(SynchronousTestCase):
    def test_headerAndSomeLines(self):
        """
        RFC 1939 7: TOP gives the header, the blank line and so many lines
        of the body, wherever the chunks are cut.
        """
        message = b"A: b\nC: d\n\n.one\ntwo\nthree\n"
        for lines, body in ((0, b""), (2, b"..one\r\ntwo\r\n"), (9, b"..one\r\ntwo\r\nthree\r\n")):
            expected = b"A: b\r\nC: d\r\n\r\n" + body + b".\r\n"
            for where, chunks in cuts(message):
                self.assertEqual(stuffed(chunks, LineLimit(lines)), expected, (lines, where))

    def test_noHeader(self):
        """
        A message that starts with its blank line has an empty header.
        """
        for where, chunks in cuts(b"\r\none\r\ntwo\r\n"):
            self.assertEqual(stuffed(chunks, LineLimit(1)), b"\r\none\r\n.\r\n", where)

    def test_lastLineWithoutLineEnd(self):
        self.assertEqual(stuffed([b"A: b\r\n\r\nend"], LineLimit(5)), b"A: b\r\n\r\nend\r\n.\r\n")
