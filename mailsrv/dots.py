"""
A message sent as a dot-terminated block of lines -- SMTP DATA (RFC 5321
4.5.2), POP3 RETR and TOP (RFC 1939 3) -- in chunks of any size: bare LFs
become CRLF (message files written by Dovecot have them), and a line that
starts with "." gets another, wherever the chunk boundaries fall.
twisted.mail stuffs each 16 KiB chunk on its own, so a "." line at a
boundary ended the block early (twisted-mail-notes.md 2.4, 3).
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


class DotStuffer:
    """
    @param limit: for POP3 TOP, where to cut the message.
    @param crlf: the message is known to have CRLF line ends already, so
        they are not looked at.
    """

    def __init__(self, limit: LineLimit | None = None, crlf: bool = False):
        self._line_start = True
        self._last = b""
        self._raw_last = b""
        self._limit = limit
        self._crlf = crlf

    @property
    def done(self) -> bool:
        """
        Whether the rest of the message would be cut anyway.
        """
        return self._limit is not None and self._limit.done

    def stuff(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        # A CR that ended the last chunk makes an LF that starts this one
        # part of a CRLF, not a bare LF.
        first = b"\n" if self._raw_last == b"\r" and chunk[:1] == b"\n" else b""
        self._raw_last = chunk[-1:]
        rest = chunk[len(first):] if first else chunk
        # Counting is ten times faster than the regular expression, and most
        # messages are CRLF already.
        if not self._crlf and rest.count(b"\n") != rest.count(b"\r\n"):
            rest = _BARE_LF.sub(b"\r\n", rest)
        chunk = first + rest if first else rest
        if self._limit is not None:
            chunk = self._limit.cut(chunk)
            if not chunk:
                return chunk
        stuffed = chunk.replace(b"\n.", b"\n..")
        if self._line_start and chunk[:1] == b".":
            stuffed = b"." + stuffed
        self._line_start = chunk.endswith(b"\n")
        self._last = chunk[-1:]
        return stuffed

    def end(self) -> bytes:
        """
        The end of the block: CRLF if the message did not end with one,
        then ".".
        """
        return b".\r\n" if self._line_start or not self._last else b"\r\n.\r\n"


class LineLimit:
    """
    Cuts a CRLF stream after its header and C{lines} lines of body (POP3
    TOP, RFC 1939 7), whatever the chunk boundaries.
    """

    def __init__(self, lines: int):
        self._left = lines
        self._in_body = False
        # The last bytes seen, to find "\r\n\r\n" across chunks; at first a
        # line end, so that a message starting with its blank line has no
        # header.
        self._tail = b"\r\n"
        self.done = False

    def cut(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        start = 0
        if not self._in_body:
            joined = self._tail + chunk
            end = joined.find(b"\r\n\r\n")
            if end == -1:
                self._tail = joined[-3:]
                return chunk
            self._in_body = True
            start = end + 4 - len(self._tail)
        position = start
        while self._left > 0:
            found = chunk.find(b"\n", position)
            if found == -1:
                return chunk
            self._left -= 1
            position = found + 1
        self.done = True
        return chunk[:position]
