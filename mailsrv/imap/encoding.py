"""
Values as IMAP4rev1 puts them on the wire (RFC 3501 sections 4, 7.4.2, 9):
strings, mailbox names, flag lists, dates, ENVELOPE, BODYSTRUCTURE, and
where the octets of a C{BODY[section]} come from.

ENVELOPE and BODYSTRUCTURE are computed from the raw header blocks that
L{mailsrv.store.summary} keeps for every part, so a FETCH of them never
reads message files.  Our own small RFC 5322 / RFC 2045 parsers are used
instead of the stdlib's because IMAP wants header values as sent: encoded
words stay encoded (RFC 3501 7.4.2), parameter values keep their case (the
lower-casing is a bug of Twisted's), and no input may raise -- 8-bit or
malformed headers give a best-effort answer (Twisted hangs on them).

Decisions worth knowing:

 - Strings are atoms only where an astring is asked for; 8-bit data is
   sent as a literal unless the client enabled UTF8=ACCEPT (RFC 6855 3),
   as Dovecot does.  NIL as a name is quoted so that it is not read as NIL.
 - Tokens that are case-insensitive (types, subtypes, encodings,
   parameter and disposition names) are sent lower-case, as Dovecot sends
   them; parameter values and every other string are sent as written.
 - The outline decides which parts are multiparts and which carry a
   message (L{_is_message}), so that BODYSTRUCTURE and part numbers always
   agree with what C{BODY[n]} returns.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

# Importing the module registers the "imap4-utf-7" codec (RFC 3501 5.1.3).
import twisted.mail.imap4  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from mailsrv.imap.parser import BodySection
    from mailsrv.store.summary import PartOutline

#: RFC 3501 9: ATOM-CHAR is any CHAR but atom-specials.  (An astring may
#: also hold "]"; we quote it instead, sparing clients' parsers.)
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
#: Longer strings go as literals, which clients read in one piece.
_MAX_QUOTED = 1000
#: What may be quoted, 8-bit aside: not too long, no CR, LF or NUL
#: (RFC 3501 9, TEXT-CHAR); and what is quoted as it is, without escapes.
_QUOTABLE = re.compile(rb"[^\0\r\n]{0,%d}" % (_MAX_QUOTED - 1))
_PLAIN = re.compile(rb'[^\0\r\n"\\\x80-\xff]{0,%d}' % (_MAX_QUOTED - 1))
_NIL = b"NIL"
#: RFC 3501 2.3.2, in the order flag lists show them.
_SYSTEM_FLAGS = ("\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: RFC 5322 2.2.3: a line break before white space folds a field.
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
#: The empty line that ends a header block, with the line break before it.
_HEADER_END = re.compile(rb"\n\r?\n")
#: A field: its first line, whose name is what precedes its first colon
#: (none without one), and the continuation lines that start with white space.
_FIELD = re.compile(rb"(?=[\s\S])(?:([^:\n]*):)?[^\n]*\n?(?:[ \t][^\n]*\n?)*")


def _field_pattern(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """
    A field of one of these names at a line start (after a line break),
    with its name and its value up to the next line that does not start
    with white space; or the empty line that ends the fields, with an
    empty name.  Names compare upper-cased as Latin-1, as in
    L{_header_fields}, where byte 0xDF (sharp s) is "SS".  Looking at the
    first letter spares trying every name at every line.
    """
    return re.compile(
        rb"\n(?:(?=[%b])(%b)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)|\r?(?=\n))"
        % (bytes(sorted({ord(name[0]) for name in names})),
           b"|".join(re.escape(name.encode()).replace(b"SS", b"(?:SS|\xdf)") for name in names)),
        re.IGNORECASE)


#: The fields that ENVELOPE and BODYSTRUCTURE read.
_ENVELOPE_FIELDS = _field_pattern(("DATE", "SUBJECT", "FROM", "SENDER", "REPLY-TO", "TO", "CC",
                                   "BCC", "IN-REPLY-TO", "MESSAGE-ID"))
_MIME_FIELDS = _field_pattern(("CONTENT-TYPE", "CONTENT-TRANSFER-ENCODING", "CONTENT-ID",
                               "CONTENT-DESCRIPTION", "CONTENT-MD5", "CONTENT-DISPOSITION",
                               "CONTENT-LANGUAGE", "CONTENT-LOCATION"))

#: RFC 5322 3.2.4: a quoted string (an unterminated one runs to the end),
#: and 3.2.2: a comment that neither nests nor escapes; L{_comment} reads
#: the others.
_QUOTED = r'"(?P<quoted>[^"\\]*(?:\\.[^"\\]*)*\\?)"?'
_FLAT_COMMENT = r"\((?P<comment>[^()\\]*)\)"
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _token_pattern(specials: str) -> re.Pattern[str]:
    """
    The next token of a structured field (see L{_tokens}) after white space:
    an atom, a domain literal where "[" is special, a quoted string, a flat
    comment, the "(" of another comment, or a special.
    """
    literal = r"|\[[^\]]*\]?" if "[" in specials else ""
    special = f"|(?P<special>[{re.escape(specials)}])" if specials else ""
    return re.compile(rf'[ \t\r\n]*(?:(?P<atom>[^ \t\r\n"({re.escape(specials)}]+{literal})'
                      rf"|{_QUOTED}|{_FLAT_COMMENT}|(?P<nested>\(){special})", re.DOTALL)


#: RFC 5322 3.2.3 specials that structure an address list; MIME fields
#: (RFC 2045 5.1) are read with none, as words and quoted strings.
_ADDRESS_TOKEN = _token_pattern("<>@,;:[")
_MIME_TOKEN = _token_pattern("")
#: Printable ASCII but specials, backslash and quote (RFC 5322 3.2.3 atext,
#: and "."): a name or address made of it can be quoted as it is.
_ATEXT = rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+"
#: A mailbox of the usual kind, "Display Name <local@domain>",
#: "<local@domain>" or "local@domain" with words of atext, after the ","
#: and space that separate it from the one before.
_SIMPLE_MAILBOX = re.compile(rb" ?(?:(%b(?: %b)*) ?(?=<))?(<)?(%b)@(%b)(?(2)>)" % ((_ATEXT,) * 4))

#: RFC 2045 5.1: a token, and a media type made of two.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_MEDIA_TYPE = re.compile(_TOKEN.pattern + "/" + _TOKEN.pattern)
#: The usual MIME field: a token or media type, then parameters whose
#: values are tokens or quoted strings without escapes.
_SIMPLE_PARAMETER = re.compile(rf'[ \t]*;[ \t]*({_TOKEN.pattern})[ \t]*=[ \t]*'
                               rf'(?:({_TOKEN.pattern})|"([^"\\]*)")[ \t]*')
_SIMPLE_MIME_FIELD = re.compile(rf"({_TOKEN.pattern}(?:/{_TOKEN.pattern})?)[ \t]*"
                                rf"((?:{_SIMPLE_PARAMETER.pattern})*)")
#: What a MIME field holds up to its next ";" (RFC 2045 5.1), or up to a
#: comment that L{_comment} has to read.
_PARAMETER = re.compile(r'(?:[^;"(]+|' + _QUOTED + "|" + _FLAT_COMMENT + ")*", re.DOTALL)
#: RFC 2231 3: a parameter split into numbered sections.
_CONTINUATION = re.compile(r"(.+?)\*(\d+)(\*?)")


def astring(value: str | bytes, utf8: bool = False) -> bytes:
    """
    An astring (RFC 3501 9): an atom where one will do, else a string.
    """
    data = _bytes(value)
    if _ATOM.fullmatch(data) and data.upper() != _NIL:
        return data
    return string(data, utf8)


def string(value: str | bytes, utf8: bool = False) -> bytes:
    """
    A quoted string where RFC 3501 9 allows one (7-bit, or UTF-8 once the
    client enabled UTF8=ACCEPT, RFC 6855 3), else a literal.

    A literal cannot carry NUL either (CHAR8); such data is sent anyway,
    as no other form can carry it.
    """
    data = _bytes(value)
    if _PLAIN.fullmatch(data):
        return b'"' + data + b'"'
    if _QUOTABLE.fullmatch(data) and (data.isascii() or (utf8 and _is_utf8(data))):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def nstring(value: str | bytes | None, utf8: bool = False) -> bytes:
    return _NIL if value is None else string(value, utf8)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """
    A mailbox name: modified UTF-7 (RFC 3501 5.1.3), or UTF-8 itself once
    the client enabled UTF8=ACCEPT (RFC 6855 3).
    """
    return astring(name, True) if utf8 else astring(name.encode("imap4-utf-7"))


def flag_list(flags: Iterable[str]) -> bytes:
    """
    A flag list: system flags first in RFC 3501 2.3.2 order, then keywords
    sorted, so that a client sees the same list every time.  A flag that
    is no atom cannot be sent and is left out.
    """
    return _flag_list(flags if isinstance(flags, frozenset) else frozenset(flags))


@functools.lru_cache(maxsize=1024)
def _flag_list(flags: frozenset[str]) -> bytes:
    """
    L{flag_list} of a set: a folder has few distinct ones, and FETCH FLAGS
    asks for one per message.
    """
    def order(flag: str) -> tuple[int, str]:
        lowered = flag.lower()
        if lowered in _SYSTEM_FLAGS:
            return _SYSTEM_FLAGS.index(lowered), ""
        return len(_SYSTEM_FLAGS), flag

    valid = {flag for flag in flags if _ATOM.fullmatch(_bytes(flag.removeprefix("\\")))}
    return b"(" + b" ".join(flag.encode("ascii") for flag in sorted(valid, key=order)) + b")"


def internal_date(timestamp: float) -> bytes:
    """
    An INTERNALDATE date-time in UTC with the day space-padded (RFC 3501 9,
    date-day-fixed); month names are English whatever the locale.
    """
    t = time.gmtime(timestamp)
    return (f'"{t.tm_mday:2d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} '
            f'{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"').encode("ascii")


#: ENVELOPEs recently built, by a digest of the header block: clients fetch
#: the same headers at every sync, and parsing them was 65% of a warm
#: header FETCH (bench/imap.py).
_ENVELOPES: OrderedDict[bytes, bytes] = OrderedDict()
ENVELOPE_CACHE_SIZE = 32768


def envelope(header: bytes) -> bytes:
    """
    The ENVELOPE of a message (RFC 3501 7.4.2) from its raw header block.

    Values are sent as written (unfolded, not decoded); absent fields are
    NIL; Sender and Reply-To default to From when absent or empty.
    """
    key = hashlib.blake2b(header, digest_size=16).digest()
    found = _ENVELOPES.get(key)
    if found is None:
        found = _ENVELOPES[key] = _envelope(header)
        if len(_ENVELOPES) > ENVELOPE_CACHE_SIZE:
            _ENVELOPES.popitem(last=False)
    else:
        _ENVELOPES.move_to_end(key)
    return found


def _envelope(header: bytes) -> bytes:
    fields = _read_fields(header, _ENVELOPE_FIELDS)
    addresses = {name: _addresses(fields.get(name))
                 for name in ("FROM", "SENDER", "REPLY-TO", "TO", "CC", "BCC")}
    for name in ("SENDER", "REPLY-TO"):
        if addresses[name] == _NIL:
            addresses[name] = addresses["FROM"]
    items = [nstring(fields.get("DATE")), nstring(fields.get("SUBJECT"))]
    items += addresses.values()
    items += [nstring(fields.get("IN-REPLY-TO")), nstring(fields.get("MESSAGE-ID"))]
    return b"(" + b" ".join(items) + b")"


def body_structure(outline: PartOutline, extensible: bool) -> bytes:
    """
    BODYSTRUCTURE (C{extensible=True}) or BODY of a message (RFC 3501
    7.4.2).  A part without Content-Type is text/plain in US-ASCII (RFC
    2045 5.2), as is one the outline did not split (a multipart without
    boundary, nesting beyond the outline's depth limit).
    """
    fields = _read_fields(outline.header, _MIME_FIELDS)
    media, params = _mime_field(fields.get("CONTENT-TYPE"))
    mime_type, _, subtype = media.partition("/") if _MEDIA_TYPE.fullmatch(media) else ("", "", "")
    if _is_multipart(outline):
        items = [b"".join(body_structure(child, extensible) for child in outline.parts),
                 string(subtype if mime_type == "multipart" else "mixed")]
        if extensible:
            items += [_parameters(params), *_extension_data(fields)]
        return b"(" + b" ".join(items) + b")"
    if _is_message(outline):
        if (mime_type, subtype) != ("message", "global"):
            mime_type, subtype = "message", "rfc822"
    elif not mime_type or mime_type == "multipart" or (
            mime_type == "message" and subtype in ("rfc822", "global")):
        mime_type, subtype, params = "text", "plain", ()
    if mime_type == "text" and all(name != "charset" for name, _ in params):
        params = [("charset", "us-ascii"), *params]
    encoding, _ = _mime_field(fields.get("CONTENT-TRANSFER-ENCODING"))
    items = [string(mime_type), string(subtype), _parameters(params),
             nstring(fields.get("CONTENT-ID")), nstring(fields.get("CONTENT-DESCRIPTION")),
             string(encoding if _TOKEN.fullmatch(encoding) else "7bit"),
             b"%d" % outline.body_size]
    if _is_message(outline):
        inner = outline.parts[0]
        items += [envelope(inner.header), body_structure(inner, extensible),
                  b"%d" % outline.body_lines]
    elif mime_type == "text":
        items.append(b"%d" % outline.body_lines)
    if extensible:
        items += [nstring(fields.get("CONTENT-MD5")), *_extension_data(fields)]
    return b"(" + b" ".join(items) + b")"


@dataclass(frozen=True)
class Span:
    """
    A range of the message file (in its CRLF form) that answers a section.
    """

    offset: int
    length: int


def locate(outline: PartOutline, section: BodySection) -> bytes | Span | None:
    """
    Where the answer to C{BODY[section]} comes from (RFC 3501 6.4.5): the
    answer itself for header sections, which the outline holds, or the
    L{Span} of the message file to read.  The partial C{<origin.count>} is
    not applied here (see L{apply_partial}).

    C{None} means that the section does not exist.  RFC 3501 has no rule
    for that; answer C{NIL}, which RFC 9051 4.5 says means exactly that
    ("BODY[1] NIL indicates absence of the body part") and Gmail sends;
    an empty string is what older servers send, and also legal.
    """
    node = _find_part(outline, section.part)
    if node is None:
        return None
    if section.text is None:
        return Span(node.body_offset, node.body_size) if section.part else \
            Span(0, outline.body_offset + outline.body_size)
    if section.text == "MIME":
        return node.header if section.part else None
    if section.part:
        if not _is_message(node):
            return None
        node = node.parts[0]
    if section.text == "TEXT":
        return Span(node.body_offset, node.body_size)
    return header_section(node.header, section)


def header_section(header: bytes, section: BodySection) -> bytes:
    """
    The answer to a HEADER, HEADER.FIELDS or HEADER.FIELDS.NOT section from
    the header block it is about (RFC 3501 6.4.5): the chosen fields as
    written, then the blank line.
    """
    if section.text == "HEADER":
        return header
    wanted = {name.upper() for name in section.fields}
    keep = section.text == "HEADER.FIELDS"
    return b"".join(raw if raw.endswith(b"\n") else raw + b"\r\n"
                    for name, raw in _header_fields(header)
                    if (name in wanted) == keep) + b"\r\n"


def apply_partial(length: int, partial: tuple[int, int] | None) -> tuple[int, int]:
    """
    The (start, count) of C{<origin.count>} within C{length} octets: an
    origin beyond the end gives an empty string (RFC 3501 6.4.5).
    """
    if partial is None:
        return 0, length
    origin, count = partial
    start = min(origin, length)
    return start, min(count, length - start)


def _bytes(value: str | bytes) -> bytes:
    # surrogateescape gives back the bytes of headers decoded with it.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_message(part: PartOutline) -> bool:
    """
    Whether the outline made this part a message/rfc822 (or global): its
    only child starts where its body does.  A multipart's first child
    starts after a boundary line, so the two cannot be confused, however
    odd the Content-Type header that decided it.
    """
    return (len(part.parts) == 1
            and part.parts[0].body_offset - len(part.parts[0].header) == part.body_offset)


def _is_multipart(part: PartOutline) -> bool:
    return bool(part.parts) and not _is_message(part)


def _find_part(outline: PartOutline, numbers: tuple[int, ...]) -> PartOutline | None:
    """
    The part that a part specifier names (RFC 3501 6.4.5): numbers count
    the children of a multipart; a single-part message's body is part 1;
    after a message/rfc822 part, numbers count within its message.
    """
    node = outline
    for depth, number in enumerate(numbers):
        if depth and not _is_multipart(node):
            if not _is_message(node):
                return None
            node = node.parts[0]
        if _is_multipart(node):
            if not 1 <= number <= len(node.parts):
                return None
            node = node.parts[number - 1]
        elif number != 1:
            return None
    return node


def _header_end(text: bytes) -> int:
    """
    Where the fields of a header block end, at its first empty line; the
    block is given after a line break, which makes its first line start
    like the others.
    """
    found = _HEADER_END.search(text)
    return len(text) if found is None else found.start() + 1


def _header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """
    The fields of a header block as (upper-case name, raw lines with their
    folding and line ends).  A line that is no field gets the name "".
    """
    fields = []
    text = b"\n" + header
    for match in _FIELD.finditer(text, 1, _header_end(text)):
        name = (match[1] or b"").rstrip(b" \t")
        fields.append((name.decode("latin-1").upper(), match[0]))
    return fields


def _read_fields(header: bytes, pattern: re.Pattern[bytes]) -> dict[str, bytes]:
    """
    The unfolded values (RFC 5322 2.2.3) of the first field of each name
    that C{pattern} (from L{_field_pattern}) finds, by upper-case name.
    One search for those names rather than a split of every line: the many
    Received fields made that most of the cost of ENVELOPE.
    """
    found: dict[str, bytes] = {}
    for name, value in pattern.findall(b"\n" + header):
        if not name:
            break  # the empty line
        name = name.decode("latin-1").upper()
        if name not in found:
            value = value.strip(b" \t\r\n")
            found[name] = _FOLD.sub(b"", value) if b"\n" in value else value
    return found


def _tokens(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """
    Lexical tokens of a structured field (RFC 5322 3.2, RFC 2045 5.1) as
    (kind, text): "atom" (domain literals too), "quoted" and "comment"
    with their contents unescaped, or a special character as its own kind.
    C{pattern} is L{_ADDRESS_TOKEN} or L{_MIME_TOKEN}.
    """
    tokens = []
    position = 0
    while match := pattern.match(text, position):
        kind = match.lastgroup
        value = match[kind]
        position = match.end()
        if kind == "quoted" and "\\" in value:
            value = _ESCAPED.sub(r"\1", value)
        elif kind == "nested":
            kind = "comment"
            value, position = _comment(text, position)
        elif kind == "special":
            kind = value
        tokens.append((kind, value))
    return tokens


def _comment(text: str, i: int) -> tuple[str, int]:
    """
    The unescaped contents of a comment, which may nest, whose "(" is before
    C{i}, and where it ends; an unterminated one runs to the end.
    """
    out = []
    depth = 1
    while i < len(text):
        char = text[i]
        i += 1
        if char == "\\" and i < len(text):
            char = text[i]
            i += 1
        elif char == ")":
            depth -= 1
            if not depth:
                break
        elif char == "(":
            depth += 1
        out.append(char)
    return "".join(out), i


def _addresses(value: bytes | None) -> bytes:
    """
    The ENVELOPE form of an address list (RFC 3501 7.4.2): NIL when there
    is none.  A list of usual mailboxes is written out directly.
    """
    if not value:
        return _NIL
    encoded = []
    for part in value.split(b","):
        simple = _SIMPLE_MAILBOX.fullmatch(part) if len(part) < _MAX_QUOTED else None
        if simple is None:
            return _encode_addresses(_address_list(value))
        name, _, local, domain = simple.groups()
        encoded.append(b'(%b NIL "%b" "%b")' % (b'"' + name + b'"' if name else _NIL,
                                                 local, domain))
    return b"(" + b"".join(encoded) + b")"


def _address_list(value: bytes) -> list[tuple[str | None, ...]]:
    """
    Address structures (name, adl, mailbox, host) of an address list (RFC
    5322 3.4), with groups as start and end markers (RFC 3501 7.4.2).

    Best effort: whatever the input, something sensible and no exception.
    A name comes from the phrase or else from a comment ("a@b (Name)", as
    Dovecot does).  An address without a domain gets the host "" rather
    than NIL, which would mark a group.
    """
    result: list[tuple[str | None, ...]] = []
    in_group = False
    words: list[tuple[str, str]] = []
    angle: list[tuple[str, str]] | None = None
    angle_open = False
    comment = None
    # A final "," ends the last address like any other.
    for kind, text in [*_tokens(value.decode("utf-8", "surrogateescape"), _ADDRESS_TOKEN),
                       (",", ",")]:
        if kind == "comment":
            comment = text
        elif angle_open:
            angle_open = kind != ">"
            if angle_open:
                angle.append((kind, text))
        elif kind == "<":
            angle, angle_open = [], True
        elif kind == ":":
            if not in_group:
                result.append((None, None, " ".join(text for _, text in words), None))
                in_group, words, angle, comment = True, [], None, None
        elif kind in ",;":
            address = _mailbox(words, angle, comment)
            if address:
                result.append(address)
            words, angle, comment = [], None, None
            if kind == ";" and in_group:
                result.append((None, None, None, None))
                in_group = False
        else:
            words.append((kind, text))
    if in_group:
        result.append((None, None, None, None))
    return result


def _mailbox(words: list[tuple[str, str]], angle: list[tuple[str, str]] | None,
             comment: str | None) -> tuple[str | None, ...] | None:
    """
    The address structure of one mailbox: C{words} before an angle address
    (the display name) or the addr-spec itself; None if there is nothing.
    """
    route = None
    if angle is None:
        if not words:
            return None
        name, spec = comment, words
    else:
        name, spec = " ".join(text for _, text in words) or comment, angle
        colons = [i for i, (kind, _) in enumerate(angle) if kind == ":"]
        if colons:
            route = "".join(text for _, text in angle[:colons[-1]]) or None
            spec = angle[colons[-1] + 1:]
    at = next((i for i, (kind, _) in enumerate(spec) if kind == "@"), len(spec))
    local = "".join(text for _, text in spec[:at])
    host = "".join(text for _, text in spec[at + 1:])
    return name, route, local, host


def _encode_addresses(addresses: list[tuple[str | None, ...]]) -> bytes:
    if not addresses:
        return _NIL
    return b"(" + b"".join(b"(" + b" ".join(nstring(item) for item in address) + b")"
                           for address in addresses) + b")"


@functools.lru_cache(maxsize=1024)
def _mime_field(value: bytes | None) -> tuple[str, tuple[tuple[str, str], ...]]:
    """
    The lower-case value ("text/plain", "attachment", "base64") and the
    parameters of a MIME field (RFC 2045 5.1, RFC 2183 2); the value is ""
    when missing or not a single token.  Parameter names are lower-cased,
    values kept as written; one without a value is dropped.  Kept for the
    next part: a folder repeats few values ("7bit", "text/plain; ...").
    """
    if value is None:
        return "", ()
    text = value.decode("utf-8", "surrogateescape")
    simple = _SIMPLE_MIME_FIELD.fullmatch(text)
    if simple is not None:  # read in one go, to the same answer as below
        return simple[1].lower(), _join_continuations(
            [(name.lower(), token or quoted)
             for name, token, quoted in _SIMPLE_PARAMETER.findall(simple[2])])
    head, *segments = _split_parameters(text)
    tokens = [token for token in _tokens(head, _MIME_TOKEN) if token[0] != "comment"]
    main = tokens[0][1].lower() if len(tokens) == 1 and tokens[0][0] == "atom" else ""
    params = []
    for segment in segments:
        name, equals, rest = segment.partition("=")
        name = name.strip().lower()
        tokens = [token for token in _tokens(rest, _MIME_TOKEN) if token[0] != "comment"]
        if equals and _TOKEN.fullmatch(name) and tokens:
            params.append((name, tokens[0][1] if tokens[0][0] == "quoted"
                           else " ".join(text for _, text in tokens)))
    return main, _join_continuations(params)


def _split_parameters(text: str) -> list[str]:
    """
    Split a MIME field at the semicolons outside quoted strings and comments.
    """
    pieces = []
    start = position = 0
    while (position := _PARAMETER.match(text, position).end()) < len(text):
        if text[position] == ";":
            pieces.append(text[start:position])
            start = position = position + 1
        else:
            position = _comment(text, position + 1)[1]
    pieces.append(text[start:])
    return pieces


def _join_continuations(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """
    Join RFC 2231 3 continuations ("name*0", "name*1*"...) into one
    parameter, in the place of the first.  Charset-encoded values stay
    encoded under "name*" (RFC 2231 4), for the client to decode as it does
    for an unsplit one; plain sections joined to them are %-encoded.
    """
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    ordered: list[tuple[str, str | None]] = []  # None: where the joined one goes
    for name, value in params:
        match = _CONTINUATION.fullmatch(name)
        if match is None:
            ordered.append((name, value))
            continue
        base = match.group(1)
        if base not in sections:
            sections[base] = []
            ordered.append((base, None))
        sections[base].append((int(match.group(2)), bool(match.group(3)), value))
    result = []
    for name, value in ordered:
        if value is not None:
            result.append((name, value))
            continue
        parts = sorted(sections[name])
        if not any(encoded for _, encoded, _ in parts):
            result.append((name, "".join(text for _, _, text in parts)))
            continue
        joined = "" if parts[0][1] else "''"
        joined += "".join(text if encoded else urllib.parse.quote(text, safe="")
                          for _, encoded, text in parts)
        result.append((name + "*", joined))
    return tuple(result)


def _parameters(params: Sequence[tuple[str, str]]) -> bytes:
    if not params:
        return _NIL
    return b"(" + b" ".join(string(name) + b" " + string(value) for name, value in params) + b")"


def _extension_data(fields: dict[str, bytes]) -> list[bytes]:
    """
    Disposition, language and location: the extension data that basic and
    multipart parts share (RFC 3501 7.4.2, RFC 2183, RFC 3066, RFC 2557).
    """
    disposition, params = _mime_field(fields.get("CONTENT-DISPOSITION"))
    language = fields.get("CONTENT-LANGUAGE")
    tags = [tag.strip() for tag in (language or b"").decode("utf-8", "surrogateescape").split(",")
            if tag.strip()]
    return [b"(" + string(disposition) + b" " + _parameters(params) + b")"
            if _TOKEN.fullmatch(disposition) else _NIL,
            b"(" + b" ".join(string(tag) for tag in tags) + b")" if tags else _NIL,
            nstring(fields.get("CONTENT-LOCATION"))]
