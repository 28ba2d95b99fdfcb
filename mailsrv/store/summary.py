"""
A message's MIME outline, computed once and kept in the folder index, so
that IMAP can answer ENVELOPE, BODYSTRUCTURE and header fetches for a whole
folder without reading its files again.

The outline is of the message as IMAP sees it, with CRLF line ends
(RFC 3501 2.3.4, 6.4.5): for each part, its raw header block, where its
body starts and how long it is, and how many lines it has; multipart parts
list their children (RFC 2046 5.1.1), and message/rfc822 (or message/global,
RFC 6532 3.7) parts the outline of the message they carry.  Interpreting
the headers (Content-Type parameters, ENVELOPE addresses) is the IMAP
layer's job; this module only finds the parts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32
from typing import BinaryIO

#: Nesting deeper than this is treated as an opaque body (a hostile message
#: must not cost unbounded recursion).
MAX_DEPTH = 20

_HEADER_END = re.compile(rb"\r\n\r\n")
#: The blank line ending a header block, whatever the line ends.
_ANY_HEADER_END = re.compile(rb"\n\r?\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
#: The first read of L{read_header}: most header blocks fit.
_HEADER_READ = 16 * 1024


@dataclass(frozen=True)
class PartOutline:
    """
    One MIME part.  Offsets are into the CRLF form of the whole message.

    @ivar header: the raw header block, up to and including its blank line.
    @ivar body_offset: where the body starts.
    @ivar body_size: the body's length in octets.
    @ivar body_lines: the body's line count.
    @ivar parts: children of a multipart, or the one message that a
        message/rfc822 part carries; empty otherwise.
    """

    header: bytes
    body_offset: int
    body_size: int
    body_lines: int
    parts: tuple[PartOutline, ...] = ()

    def to_json(self) -> list:
        return [self.header.decode("latin-1"), self.body_offset, self.body_size,
                self.body_lines, [p.to_json() for p in self.parts]]

    @classmethod
    def from_json(cls, data: list) -> PartOutline:
        header, offset, size, lines, parts = data
        return cls(header.encode("latin-1"), offset, size, lines,
                   tuple(cls.from_json(p) for p in parts))


def dumps(outline: PartOutline) -> str:
    return json.dumps(outline.to_json(), separators=(",", ":"))


def loads(text: str) -> PartOutline:
    return PartOutline.from_json(json.loads(text))


def to_crlf(data: bytes) -> bytes:
    """
    The message with every bare LF made CRLF, as IMAP serves it.
    """
    if data.count(b"\n") == data.count(b"\r\n"):
        return data  # already CRLF: no regular expression over the whole file
    return _BARE_LF.sub(b"\r\n", data)


def read_header(file: BinaryIO) -> bytes:
    """
    The header block of the message in C{file} with CRLF line ends, the
    same as C{outline(file.read()).header}, reading only as far as its
    blank line: listing ENVELOPEs of a folder of large messages must not
    read their bodies.
    """
    data = file.read(_HEADER_READ)
    if data.startswith((b"\r\n", b"\n")):
        return b"\r\n"  # no header at all, just the blank line
    searched = 0
    while True:
        found = _ANY_HEADER_END.search(data, searched)
        if found is not None:
            return to_crlf(data[:found.end()])
        more = file.read(len(data))
        if not more:
            return to_crlf(data)  # all header, no body
        searched = max(0, len(data) - 2)
        data += more


def outline(data: bytes) -> PartOutline:
    """
    The outline of a whole message (any line ends).
    """
    data = to_crlf(data)
    return _part(data, 0, len(data), 0, "text/plain")


_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:((?:[^\r\n]|\r\n[ \t])*)",
                           re.IGNORECASE | re.MULTILINE)


def _content_type(header: bytes) -> Message:
    """
    A message holding only the part's first Content-Type field: parsing
    the whole header block with the email package was most of the cost
    of outlining a folder.
    """
    message = Message(policy=compat32)
    found = _CONTENT_TYPE.search(header)
    if found is not None:
        message["Content-Type"] = found.group(1).decode("latin-1")
    return message


def _part(data: bytes, start: int, end: int, depth: int, default_type: str) -> PartOutline:
    """
    Outline the part in C{data[start:end]}.
    """
    found = _HEADER_END.search(data, start, end)
    if data.startswith(b"\r\n", start):
        body_offset = start + 2  # no header at all, just the blank line
    elif found is None:
        body_offset = end  # all header, no body
    else:
        body_offset = found.end()
    header = data[start:body_offset]
    body_size = end - body_offset
    lines = data.count(b"\r\n", body_offset, end) + (
        1 if body_size and not data.endswith(b"\r\n", body_offset, end) else 0)
    parts: tuple[PartOutline, ...] = ()
    if depth < MAX_DEPTH:
        message = _content_type(header)
        content_type = message.get_content_type() if message.get("content-type") else \
            default_type
        if content_type.startswith("multipart/"):
            boundary = message.get_param("boundary")
            if boundary and not str(boundary).isascii():
                # RFC 2046 5.1.1: boundaries are 7-bit; an 8-bit one cannot
                # be matched, so the body stays one opaque part.
                boundary = None
            if boundary:
                child_type = ("message/rfc822" if content_type == "multipart/digest"
                              else "text/plain")
                parts = tuple(_part(data, s, e, depth + 1, child_type)
                              for s, e in _multipart_spans(data, body_offset, end,
                                                           str(boundary).encode("ascii")))
        elif content_type in ("message/rfc822", "message/global"):
            parts = (_part(data, body_offset, end, depth + 1, "text/plain"),)
    return PartOutline(header, body_offset, body_size, lines, parts)


def _multipart_spans(data: bytes, start: int, end: int, boundary: bytes):
    """
    The (start, end) of each body part between the boundary delimiters
    (RFC 2046 5.1.1): a delimiter is a line "--boundary", optionally
    followed by white space; the CRLF before it belongs to the delimiter.
    The close delimiter "--boundary--" ends the list.  Found with
    C{bytes.find}: a regular expression anchored at every line start was
    a quarter of outlining a folder of 100 KB messages (bench/imap.py).
    """
    marker = b"--" + boundary
    spans = []
    part_start = None
    position = start
    while True:
        found = data.find(marker, position, end)
        if found == -1:
            break
        after = found + len(marker)
        close = data.startswith(b"--", after, end)
        line_end = data.find(b"\r\n", after, end)
        if line_end == -1:
            line_end = end
        rest = data[after + 2 if close else after:line_end]
        if (found != start and data[found - 1:found] != b"\n") or rest.strip(b" \t"):
            position = found + 1
            continue
        if part_start is not None:
            spans.append((part_start, found - 2 if data[found - 2:found] == b"\r\n"
                          and found - 2 >= start else found))
        if close:
            part_start = None
            break
        part_start = min(line_end + 2, end)
        position = line_end
    if part_start is not None:
        spans.append((part_start, end))
    return spans
