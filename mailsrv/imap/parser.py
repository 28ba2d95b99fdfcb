"""
IMAP4rev1 commands as received -> typed values, and the line framing
helper the protocol uses to find literals.

The grammar is RFC 3501 section 9 (formal syntax) with the extensions the
server speaks: LITERAL+ (RFC 7888), SASL-IR (RFC 4959), UIDPLUS's UID
EXPUNGE (RFC 4315), MOVE (RFC 6851), UNSELECT (RFC 3691), ENABLE (RFC 5161),
ID (RFC 2971), NAMESPACE (RFC 2342), IDLE (RFC 2177), LIST-EXTENDED select
and return options (RFC 5258, as folded into RFC 9051 section 6.3.9) and
UTF8=ACCEPT's APPEND data (RFC 6855 section 4).  A command arrives as the
protocol framed it: its lines and the literals between them, which a small
cursor walks; one function per argument type reads each argument, and a
table says which arguments each command takes.

Every malformed command raises L{ParseError} (never another exception)
carrying the command's tag and a short text for the "BAD" reply.  Nothing
here expands a sequence range or recurses without bound.

Decisions worth knowing:

 - Lenient where clients are known to stray: several spaces between
   arguments and trailing spaces are accepted; UTF-8 in quoted strings and
   in atoms (RFC 6855 clients, and mailbox names from clients that did not
   ENABLE UTF8=ACCEPT) is decoded as UTF-8.
 - Strict where it protects the server: tags are 7-bit; a quoted string
   escapes only '"' and "\\"; modified UTF-7 names must be in the one
   canonical form RFC 3501 section 5.1.3 allows (no null shifts, no
   encoded printable ASCII), which keeps one folder from having two names.
"""

from __future__ import annotations

import base64
import datetime
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import twisted.mail.imap4  # noqa: F401 (registers the "imap4-utf-7" codec)

from mailsrv.store.names import SEPARATOR

#: RFC 3501 section 9: number and nz-number are unsigned 32-bit integers.
MAX_NUMBER = 2**32 - 1

#: Deepest nesting of parentheses, NOT and OR in one SEARCH.
MAX_SEARCH_DEPTH = 100


class ParseError(Exception):
    """A command that cannot be parsed: answered "<tag> BAD <text>" (tag may be "*")."""

    def __init__(self, text: str, tag: str = "*"):
        super().__init__(text)
        self.text = text
        self.tag = tag


class BadCharset(ParseError):
    """A SEARCH CHARSET we do not know: answered "<tag> NO [BADCHARSET (UTF-8 US-ASCII)] ..."."""


@dataclass(frozen=True)
class Literal:
    """A literal read off the wire: small ones as bytes, big ones (APPEND) as a temp file."""

    data: bytes | None = None
    file: typing.BinaryIO | None = None  # positioned anywhere; readers seek(0)
    size: int = 0


@dataclass(frozen=True)
class SequenceSet:
    """RFC 3501 sequence-set: ((lo, hi), ...) as written, where None stands for "*"."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """
        Sorted, merged, inclusive ranges with "*" = C{largest}, each range
        ordered low to high (RFC 3501 section 9: "2:4" and "4:2" are the
        same); empty when C{largest} is 0.  Numbers above C{largest} are
        kept, so the caller can tell a bad message number from a UID range
        that merely reaches past the last UID.  Never walks a range.
        """
        if largest == 0:
            return []
        ordered = sorted(
            (min(lo, hi), max(lo, hi))
            for lo, hi in ((largest if a is None else a, largest if b is None else b)
                           for a, b in self.ranges))
        merged: list[tuple[int, int]] = []
        for lo, hi in ordered:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged


@dataclass(frozen=True)
class BodySection:
    """BODY[...]<partial> / BODY.PEEK[...] / RFC822* items."""

    peek: bool
    part: tuple[int, ...]  # () = whole message; (1, 2) = "1.2"
    text: str | None  # None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"
    fields: tuple[str, ...] = ()  # upper-case field names for HEADER.FIELDS[.NOT]
    partial: tuple[int, int] | None = None  # (origin, count)
    label_override: str | None = None  # "RFC822", "RFC822.HEADER", "RFC822.TEXT"

    def label(self) -> str:
        """
        The response item name, e.g. 'BODY[1.HEADER.FIELDS (FROM TO)]<0>':
        a partial is answered as its origin only (RFC 3501 section 7.4.2).
        """
        if self.label_override:
            return self.label_override
        spec = ".".join(str(number) for number in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{spec}]{origin}"


@dataclass(frozen=True)
class FetchItem:
    """One FETCH attribute; "SECTION" items carry their L{BodySection}."""

    name: str  # UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY SECTION
    section: BodySection | None = None


@dataclass(frozen=True)
class SearchKey:
    """One SEARCH criterion; synonyms are normalised (see the module contract)."""

    op: str
    args: tuple = ()


@dataclass(frozen=True)
class Command:
    """A parsed command; for "UID FETCH" name is "FETCH" and uid is True."""

    tag: str
    name: str
    uid: bool = False
    args: tuple = ()


# Character classes of RFC 3501 section 9, over text decoded as Latin-1 so
# that one character is one octet.  "word" is what may follow a space up to
# the next delimiter; each argument type then checks it against its own class.
_WORD = re.compile(r'[^\x00-\x20\x7f(){"]*')
_ATOM = re.compile(r'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING_ATOM = re.compile(r'[^\x00-\x20\x7f(){%*"\\]+')  # 8-bit allowed: UTF-8 from clients
_LIST_ATOM = re.compile(r'[^\x00-\x20\x7f(){"\\]+')
_TAG = re.compile(r'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_QUOTED = re.compile(r'"((?:[^\x00"\\]|\\["\\])*)"')
_QUOTED_ESCAPE = re.compile(r"\\(.)")
_BLANK = re.compile(r" *\Z")
_LITERAL = re.compile(r"\{[0-9]{1,10}\+?\}")
_NUMBER = re.compile(r"[0-9]{1,10}")
_NZ_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_SEQ_RANGE = rf"(?:{_NZ_NUMBER.pattern}|\*)(?::(?:{_NZ_NUMBER.pattern}|\*))?"
_SEQUENCE_SET = re.compile(rf"{_SEQ_RANGE}(?:,{_SEQ_RANGE})*")
_FLAG = re.compile(r'\\?[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 section 3.6.8 ftext
_FETCH_NAME = re.compile(r"[A-Za-z0-9.]+")
_SECTION_SPEC = re.compile(r"[A-Za-z0-9.]*")
_PARTIAL = re.compile(r"([0-9]{1,10})\.([0-9]{1,10})>")
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(r'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
                        r'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-5][0-9])"')
_STORE_ACTION = re.compile(r"([+-]?)FLAGS(\.SILENT)?")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

_SYSTEM_FLAGS = {flag.upper(): flag for flag in
                 ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
_STATUS_ITEMS = frozenset(
    ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ"))
_SELECT_OPTIONS = frozenset(("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"))
_BASE_SELECT_OPTIONS = frozenset(("SUBSCRIBED", "SPECIAL-USE"))
_RETURN_OPTIONS = frozenset(("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"))
_CHARSETS = {"UTF-8": "utf-8", "US-ASCII": "ascii"}

_SIMPLE_FETCH = frozenset(
    ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY"))
_RFC822_FETCH = {
    "RFC822": BodySection(False, (), None, label_override="RFC822"),
    "RFC822.HEADER": BodySection(True, (), "HEADER", label_override="RFC822.HEADER"),
    "RFC822.TEXT": BodySection(False, (), "TEXT", label_override="RFC822.TEXT"),
}
_FAST = tuple(FetchItem(name) for name in ("FLAGS", "INTERNALDATE", "RFC822.SIZE"))
_FETCH_MACROS = {
    "FAST": _FAST,
    "ALL": (*_FAST, FetchItem("ENVELOPE")),
    "FULL": (*_FAST, FetchItem("ENVELOPE"), FetchItem("BODY")),
}
_SECTION_TEXTS = frozenset(("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"))

_SEARCH_FLAGS = {
    f"{prefix}{name[1:].upper()}": (op, name)
    for name in _SYSTEM_FLAGS.values()
    for prefix, op in (("", "FLAG"), ("UN", "NOFLAG"))
}
_SEARCH_HEADERS = frozenset(("FROM", "TO", "CC", "BCC", "SUBJECT"))
_SEARCH_DATES = frozenset(("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"))
_SEARCH_WITH_ARGUMENT = _SEARCH_HEADERS | _SEARCH_DATES | frozenset(
    ("HEADER", "BODY", "TEXT", "LARGER", "SMALLER", "UID"))
_SEARCH_CONSTANTS = {
    "ALL": SearchKey("ALL"),
    "RECENT": SearchKey("RECENT"),
    "NEW": SearchKey("AND", (SearchKey("RECENT"), SearchKey("NOFLAG", ("\\Seen",)))),
    "OLD": SearchKey("NOT", (SearchKey("RECENT"),)),
}


def _printable(text: str) -> str:
    """Client text made safe to quote in a reply: ASCII, printable, short."""
    return "".join(char if " " <= char < "\x7f" else "?" for char in text[:40])


def tag_of(line: bytes) -> str:
    """The tag of a command line for an error reply, or "*" when it has none we may echo."""
    text = line.decode("latin-1")
    match = _TAG.match(text)
    if match is None or text[match.end():match.end() + 1] not in ("", " "):
        return "*"
    return match[0]


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """
    If a line (CRLF already stripped) ends with "{n}" or "{n+}" (RFC 3501
    section 4.3, RFC 7888 LITERAL+), the size and whether it is
    synchronizing.  None otherwise.  "{" cannot start an atom, so any
    brace group ending the line is meant as a literal and must be valid.
    """
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0 or b" " in line[start:]:
        return None
    match = re.fullmatch(rb"([0-9]{1,10})(\+?)", line[start + 1:-1])
    if match is None or int(match[1]) > MAX_NUMBER:
        raise ParseError("Invalid literal size", tag_of(line))
    return int(match[1]), not match[2]


class _Cursor:
    """Reads one command: its lines (as Latin-1 text, an octet per character) and its literals."""

    def __init__(self, pieces: list[bytes | Literal], utf8: bool):
        lines, literals = pieces[0::2], pieces[1::2]
        tag = tag_of(lines[0]) if lines and isinstance(lines[0], bytes) else "*"
        if (not lines or len(lines) != len(literals) + 1
                or not all(isinstance(line, bytes) for line in lines)
                or not all(isinstance(literal, Literal) for literal in literals)):
            raise ParseError("Malformed command framing", tag)
        self._lines = [line.decode("latin-1") for line in lines]
        self._literals = literals
        self._index = 0
        self.pos = 0
        self.utf8 = utf8
        self.tag = "*"
        self.command = "the tag"

    @property
    def line(self) -> str:
        return self._lines[self._index]

    def fail(self, text: str) -> NoReturn:
        raise ParseError(text, self.tag)

    def expected(self, what: str) -> NoReturn:
        self.fail(f"Expected {what} after {self.command}")

    def peek(self) -> str:
        return self.line[self.pos:self.pos + 1]

    def take(self, char: str) -> bool:
        if self.peek() != char:
            return False
        self.pos += 1
        return True

    def at_end(self) -> bool:
        return self._index == len(self._lines) - 1 and _BLANK.match(self.line, self.pos) is not None

    def delimited(self) -> bool:
        """Whether the token just read is complete: an argument ends at SP, ")" or the end."""
        return self.peek() in ("", " ", ")")

    def space(self, what: str) -> None:
        """The separator before an argument (one SP, or several from lenient clients)."""
        if not self.take(" ") or self.at_end():
            self.expected(what)
        while self.take(" "):
            pass

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.match(self.line, self.pos)
        if match is not None:
            self.pos = match.end()
        return match

    def word(self) -> str:
        """Everything up to the next space, parenthesis, quote, brace or control character."""
        match = _WORD.match(self.line, self.pos)
        assert match is not None  # the pattern matches the empty string
        self.pos = match.end()
        return match[0]

    def literal(self, what: str) -> Literal:
        """A literal's marker must end its line; the protocol put the literal after it."""
        match = _LITERAL.fullmatch(self.line, self.pos)
        if match is None or self._index + 1 >= len(self._lines):
            self.expected(what)
        literal = self._literals[self._index]
        self._index += 1
        self.pos = 0
        return literal

    def string(self, what: str) -> bytes:
        """RFC 3501 string: quoted or literal, as octets."""
        if self.peek() == "{":
            return _literal_bytes(self.literal(what))
        match = self.match(_QUOTED)
        if match is None:
            self.expected(what)
        return _QUOTED_ESCAPE.sub(r"\1", match[1]).encode("latin-1")

    def astring(self, what: str, atom: re.Pattern[str] = _ASTRING_ATOM) -> bytes:
        """RFC 3501 astring (or, with another atom class, list-mailbox)."""
        if self.peek() in ('"', "{"):
            return self.string(what)
        word = self.word()
        if not atom.fullmatch(word):
            self.expected(what)
        return word.encode("latin-1")

    def atom(self, what: str) -> str:
        word = self.word()
        if not _ATOM.fullmatch(word):
            self.expected(what)
        return word

    def decode(self, raw: bytes, what: str, codec: str = "utf-8") -> str:
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            self.fail(f"Invalid {codec.upper()} in {what}")
        if "\x00" in text:
            self.fail(f"NUL in {what}")
        return text

    def finish(self) -> None:
        if not self.at_end():
            self.fail("Too many arguments" if self.peek() == " " else
                      f"Unexpected characters after {self.command} arguments")


def _literal_bytes(literal: Literal) -> bytes:
    """A literal in a string position: small, but the protocol may still have spooled it."""
    if literal.file is None:
        return literal.data or b""
    literal.file.seek(0)
    return literal.file.read()


def _parenthesized(cur: _Cursor, what: str, item: Callable[[_Cursor, str], typing.Any],
                   *, empty_ok: bool = False) -> tuple:
    """ "(" item *(SP item) ")", the list shape RFC 3501 uses everywhere."""
    if not cur.take("("):
        cur.expected(what)
    if cur.take(")"):
        if not empty_ok:
            cur.expected(what)
        return ()
    items = [item(cur, what)]
    while not cur.take(")"):
        cur.space(what)
        items.append(item(cur, what))
    return tuple(items)


def _number(cur: _Cursor, what: str) -> int:
    match = cur.match(_NUMBER)
    if match is None or int(match[0]) > MAX_NUMBER or not cur.delimited():
        cur.expected(what)
    return int(match[0])


def _text(cur: _Cursor, what: str) -> str:
    return cur.decode(cur.astring(what), what)


def _mailbox_name(cur: _Cursor, raw: bytes, what: str) -> str:
    """
    Modified UTF-7 (RFC 3501 section 5.1.3) in canonical form, or UTF-8
    (RFC 6855 section 3); INBOX as the first level in any case is "INBOX".
    """
    if raw.isascii() and not cur.utf8:
        try:
            name = raw.decode("imap4-utf-7")
            canonical = name.encode("imap4-utf-7") == raw
            name.encode("utf-8")
        except UnicodeError:
            canonical = False
        if not canonical:
            cur.fail(f"Invalid modified UTF-7 in {what}")
    else:
        name = cur.decode(raw, what)
    first, separator, rest = name.partition(SEPARATOR)
    if first.isascii() and first.upper() == "INBOX":
        name = "INBOX" + separator + rest
    return name


def _mailbox(cur: _Cursor, what: str) -> str:
    return _mailbox_name(cur, cur.astring(what), what)


def _list_mailbox(cur: _Cursor, what: str) -> str:
    return _mailbox_name(cur, cur.astring(what, _LIST_ATOM), what)


def _sequence_set(cur: _Cursor, what: str) -> SequenceSet:
    sequence = _parse_sequence_set(cur.word())
    if sequence is None:
        cur.expected(what)
    return sequence


def _parse_sequence_set(text: str) -> SequenceSet | None:
    """RFC 3501 sequence-set; None if malformed (0, junk, or numbers past 2**32-1)."""
    if not _SEQUENCE_SET.fullmatch(text):
        return None
    ranges = []
    for element in text.split(","):
        lo, _, hi = element.partition(":")
        bounds = [None if bound == "*" else int(bound) for bound in (lo, hi or lo)]
        if any(bound is not None and bound > MAX_NUMBER for bound in bounds):
            return None
        ranges.append((bounds[0], bounds[1]))
    return SequenceSet(tuple(ranges))


def _flag(cur: _Cursor, what: str) -> str:
    """A flag to set: system flags in canonical case, keywords as sent; never \\Recent."""
    word = cur.word()
    if not _FLAG.fullmatch(word):
        cur.expected(what)
    if not word.startswith("\\"):
        return word
    if word.upper() == "\\RECENT":
        cur.fail("\\Recent cannot be set by a client")
    flag = _SYSTEM_FLAGS.get(word.upper())
    if flag is None:
        cur.fail(f"Unknown system flag {_printable(word)}")
    return flag


def _flag_list(cur: _Cursor, what: str) -> tuple[str, ...]:
    return _parenthesized(cur, what, _flag, empty_ok=True)


def _status_item(cur: _Cursor, what: str) -> str:
    word = cur.word().upper()
    if word not in _STATUS_ITEMS:
        if not word:
            cur.expected(what)
        cur.fail(f"Unknown status item {_printable(word)}")
    return word


def _status_items(cur: _Cursor, what: str) -> tuple[str, ...]:
    return _parenthesized(cur, what, _status_item)


def _fetch_items(cur: _Cursor, what: str) -> tuple[FetchItem, ...]:
    """A macro, one fetch-att, or a parenthesized list of them (RFC 3501 section 6.4.5)."""
    if cur.peek() == "(":
        return _parenthesized(cur, what, _fetch_att)
    macro = _FETCH_NAME.match(cur.line, cur.pos)
    if macro is not None and macro[0].upper() in _FETCH_MACROS:
        cur.pos = macro.end()
        return _FETCH_MACROS[macro[0].upper()]
    return (_fetch_att(cur, what),)


def _fetch_att(cur: _Cursor, what: str) -> FetchItem:
    match = cur.match(_FETCH_NAME)
    if match is None:
        cur.expected(what)
    name = match[0].upper()
    if name in ("BODY", "BODY.PEEK") and cur.take("["):
        return FetchItem("SECTION", _section(cur, name == "BODY.PEEK"))
    if name in _SIMPLE_FETCH:
        return FetchItem(name)
    if name in _RFC822_FETCH:
        return FetchItem("SECTION", _RFC822_FETCH[name])
    cur.fail(f"Unknown fetch item {_printable(name)}")


def _section(cur: _Cursor, peek: bool) -> BodySection:
    """After "BODY[": section-spec "]" and an optional partial "<origin.count>"."""
    what = "a body section"
    spec = cur.match(_SECTION_SPEC)
    assert spec is not None  # the pattern matches the empty string
    names = spec[0].split(".") if spec[0] else []
    part = []
    while names and names[0].isdigit():
        number = names.pop(0)
        if not _NZ_NUMBER.fullmatch(number) or int(number) > MAX_NUMBER:
            cur.expected(what)
        part.append(int(number))
    text = ".".join(names).upper() if names else None
    if text is not None and (text not in _SECTION_TEXTS or (text == "MIME" and not part)):
        cur.expected(what)
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        cur.space("header field names")
        fields = _parenthesized(cur, "header field names", _field_name)
    if not cur.take("]"):
        cur.expected(what)
    partial = None
    if cur.take("<"):
        match = cur.match(_PARTIAL)
        if match is None or not 0 < int(match[2]) <= MAX_NUMBER or int(match[1]) > MAX_NUMBER:
            cur.expected("a partial <origin.count>")
        partial = (int(match[1]), int(match[2]))
    return BodySection(peek, tuple(part), text, fields, partial)


def _field_name(cur: _Cursor, what: str) -> str:
    name = cur.decode(cur.astring(what), what)
    if not _FIELD_NAME.fullmatch(name):
        cur.expected(what)
    return name.upper()


def _date(cur: _Cursor, what: str) -> datetime.date:
    """RFC 3501 date: "1-Feb-1994", optionally in double quotes."""
    quoted = cur.take('"')
    match = cur.match(_DATE)
    if (match is None or (quoted and not cur.take('"')) or not cur.delimited()
            or match[2].upper() not in _MONTHS):
        cur.expected(what)
    try:
        return datetime.date(int(match[3]), _MONTHS.index(match[2].upper()) + 1, int(match[1]))
    except ValueError:
        cur.expected(what)


def _date_time(cur: _Cursor, what: str) -> datetime.datetime:
    """RFC 3501 date-time: '"17-Jul-1996 02:44:25 -0700"', as an aware datetime."""
    match = cur.match(_DATE_TIME)
    if match is None or match[2].upper() not in _MONTHS:
        cur.expected(what)
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    offset = datetime.timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
    try:
        zone = datetime.timezone(-offset if sign == "-" else offset)
        return datetime.datetime(int(year), _MONTHS.index(match[2].upper()) + 1, int(day),
                                 int(hour), int(minute), int(second), tzinfo=zone)
    except ValueError:
        cur.expected(what)


# Commands whose grammar is more than a fixed list of arguments.

def _append(cur: _Cursor) -> tuple:
    """APPEND mailbox [flag-list] [date-time] (literal / UTF8 "(" literal8 ")")."""
    cur.space("a mailbox name")
    mailbox = _mailbox(cur, "a mailbox name")
    cur.space("a message literal")
    flags: tuple[str, ...] = ()
    if cur.peek() == "(":
        flags = _flag_list(cur, "a flag list")
        cur.space("a message literal")
    date = None
    if cur.peek() == '"':
        date = _date_time(cur, "a date-time")
        cur.space("a message literal")
    if cur.line[cur.pos:cur.pos + 4].upper() == "UTF8":  # RFC 6855 section 4
        cur.pos += 4
        cur.space("a message literal")
        if not (cur.take("(") and cur.take("~")):
            cur.expected("a message literal")
        message = cur.literal("a message literal")
        if not cur.take(")"):
            cur.expected('")" after the message literal')
    else:
        message = cur.literal("a message literal")
    return (mailbox, flags, date, message)


def _authenticate(cur: _Cursor) -> tuple:
    """AUTHENTICATE mechanism [initial-response] (RFC 4959: base64, "=" for empty)."""
    cur.space("a SASL mechanism")
    mechanism = cur.atom("a SASL mechanism").upper()
    if cur.at_end():
        return (mechanism, None)
    cur.space("an initial response")
    response = cur.word()
    if not response:
        cur.expected("an initial response")
    if response == "=":
        return (mechanism, b"")
    try:
        return (mechanism, base64.b64decode(response.encode("ascii"), validate=True))
    except ValueError:  # binascii.Error, and UnicodeEncodeError for 8-bit text
        cur.fail("Invalid base64 in the initial response")


def _list(cur: _Cursor) -> tuple:
    """LIST [select-options] reference pattern [RETURN return-options] (RFC 9051 section 6.3.9)."""
    cur.space("a reference name")
    select: tuple[str, ...] = ()
    if cur.peek() == "(":
        select = _options(cur, "selection options", _SELECT_OPTIONS)
        if "RECURSIVEMATCH" in select and _BASE_SELECT_OPTIONS.isdisjoint(select):
            cur.fail("RECURSIVEMATCH needs another selection option")
        cur.space("a reference name")
    reference = _mailbox(cur, "a reference name")
    cur.space("a mailbox pattern")
    if cur.peek() == "(":
        patterns = _parenthesized(cur, "a mailbox pattern", _list_mailbox)
        if len(patterns) > 1:
            cur.fail("Only one LIST pattern is supported")
        pattern = patterns[0]
    else:
        pattern = _list_mailbox(cur, "a mailbox pattern")
    returns: tuple[str, ...] = ()
    if not cur.at_end():
        cur.space("RETURN")
        if cur.word().upper() != "RETURN":
            cur.expected("RETURN")
        cur.space("return options")
        returns = _options(cur, "return options", _RETURN_OPTIONS)
    return (reference, pattern, select, returns)


def _options(cur: _Cursor, what: str, known: frozenset[str]) -> tuple[str, ...]:
    """A LIST option list: RFC 9051 section 6.3.9 says BAD for unknown ones, once each."""
    options = tuple(dict.fromkeys(
        option.upper() for option in _parenthesized(cur, what, _Cursor.atom, empty_ok=True)))
    unknown = [option for option in options if option not in known]
    if unknown:
        cur.fail(f"Unsupported LIST option {_printable(unknown[0])}")
    return options


def _store(cur: _Cursor) -> tuple:
    """STORE sequence-set [+|-]FLAGS[.SILENT] (flag-list / flag *(SP flag))."""
    cur.space("a sequence set")
    sequence = _sequence_set(cur, "a sequence set")
    cur.space("FLAGS, +FLAGS or -FLAGS")
    action = _STORE_ACTION.fullmatch(cur.word().upper())
    if action is None:
        cur.expected("FLAGS, +FLAGS or -FLAGS")
    cur.space("flags")
    if cur.peek() == "(":
        flags = _flag_list(cur, "a flag list")
    else:
        words = [_flag(cur, "flags")]
        while not cur.at_end():
            cur.space("a flag")
            words.append(_flag(cur, "a flag"))
        flags = tuple(words)
    mode = {"": "set", "+": "add", "-": "remove"}[action[1]]
    return (sequence, mode, bool(action[2]), flags)


def _search(cur: _Cursor) -> tuple:
    """SEARCH [CHARSET astring] 1*search-key (RFC 3501 section 6.4.4)."""
    cur.space("a search key")
    charset = None
    codec = "utf-8"
    if cur.line[cur.pos:cur.pos + 8].upper() == "CHARSET ":
        cur.pos += 7
        cur.space("a charset name")
        charset = cur.decode(cur.astring("a charset name"), "a charset name").upper()
        if charset not in _CHARSETS:
            raise BadCharset(f"Unsupported charset {_printable(charset)}", cur.tag)
        codec = _CHARSETS[charset]
        cur.space("a search key")
    keys = [_search_key(cur, codec, 0)]
    while not cur.at_end():
        cur.space("a search key")
        keys.append(_search_key(cur, codec, 0))
    return (charset, _all_of(keys))


def _all_of(keys: list[SearchKey]) -> SearchKey:
    return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))


def _search_key(cur: _Cursor, codec: str, depth: int) -> SearchKey:
    """One search-key; parentheses, NOT and OR recurse, at most MAX_SEARCH_DEPTH deep."""
    if depth > MAX_SEARCH_DEPTH:
        cur.fail("Search keys nested too deeply")
    what = "a search key"
    if cur.take("("):
        keys = [_search_key(cur, codec, depth + 1)]
        while not cur.take(")"):
            cur.space(what)
            keys.append(_search_key(cur, codec, depth + 1))
        return _all_of(keys)
    word = cur.word()
    if word[:1].isdigit() or word[:1] == "*":
        sequence = _parse_sequence_set(word)
        if sequence is None:
            cur.expected("a sequence set")
        return SearchKey("SEQ", (sequence,))
    name = word.upper()
    if not name:
        cur.expected(what)
    if name in _SEARCH_CONSTANTS:
        return _SEARCH_CONSTANTS[name]
    if name in _SEARCH_FLAGS:
        op, flag = _SEARCH_FLAGS[name]
        return SearchKey(op, (flag,))
    argument = f"an argument to {name}"
    if name in ("KEYWORD", "UNKEYWORD"):
        cur.space(argument)
        return SearchKey("FLAG" if name == "KEYWORD" else "NOFLAG", (cur.atom(argument),))
    if name == "NOT":
        cur.space(what)
        return SearchKey("NOT", (_search_key(cur, codec, depth + 1),))
    if name == "OR":
        cur.space(what)
        first = _search_key(cur, codec, depth + 1)
        cur.space(what)
        return SearchKey("OR", (first, _search_key(cur, codec, depth + 1)))
    if name not in _SEARCH_WITH_ARGUMENT:
        cur.fail(f"Unknown search key {_printable(name)}")
    cur.space(argument)
    if name in _SEARCH_HEADERS:
        return SearchKey("HEADER", (name, cur.decode(cur.astring(argument), argument, codec)))
    if name == "HEADER":
        field = _field_name(cur, "a header field name")
        cur.space(argument)
        return SearchKey("HEADER", (field, cur.decode(cur.astring(argument), argument, codec)))
    if name in ("BODY", "TEXT"):
        return SearchKey(name, (cur.decode(cur.astring(argument), argument, codec),))
    if name in _SEARCH_DATES:
        return SearchKey(name, (_date(cur, "a date"),))
    if name in ("LARGER", "SMALLER"):
        return SearchKey(name, (_number(cur, "a number"),))
    return SearchKey("UID", (_sequence_set(cur, "a sequence set"),))


def _id(cur: _Cursor) -> tuple:
    """ID ("(" *(string SP nstring) ")" / NIL) (RFC 2971 section 4)."""
    what = "NIL or a list of ID fields"
    cur.space(what)
    if cur.peek() != "(":
        if cur.word().upper() != "NIL":
            cur.expected(what)
        return (None,)
    cur.pos += 1
    fields: dict[str, str | None] = {}
    while not cur.take(")"):
        if fields:
            cur.space("an ID field")
        key = cur.decode(cur.string("an ID field"), "an ID field")
        cur.space("an ID value")
        if cur.line[cur.pos:cur.pos + 3].upper() == "NIL":
            cur.pos += 3
            fields[key] = None
        else:
            fields[key] = cur.decode(cur.string("an ID value"), "an ID value")
    return (fields,)


def _enable(cur: _Cursor) -> tuple:
    """ENABLE 1*(SP capability) (RFC 5161 section 4)."""
    capabilities = []
    while not capabilities or not cur.at_end():
        cur.space("a capability name")
        capabilities.append(cur.atom("a capability name").upper())
    return (tuple(capabilities),)


_Reader = Callable[[_Cursor, str], typing.Any]


def _fixed(*arguments: tuple[_Reader, str]) -> Callable[[_Cursor], tuple]:
    """The grammar of a command that takes exactly these arguments, one SP before each."""
    def parse(cur: _Cursor) -> tuple:
        values = []
        for reader, what in arguments:
            cur.space(what)
            values.append(reader(cur, what))
        return tuple(values)
    return parse


_MAILBOX = (_mailbox, "a mailbox name")
_SEQUENCE = (_sequence_set, "a sequence set")

_COMMANDS: dict[str, Callable[[_Cursor], tuple]] = {
    **dict.fromkeys(("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
                     "EXPUNGE", "IDLE", "NAMESPACE"), _fixed()),
    "LOGIN": _fixed((_text, "a user name"), (_text, "a password")),
    "AUTHENTICATE": _authenticate,
    **dict.fromkeys(("SELECT", "EXAMINE", "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE"),
                    _fixed(_MAILBOX)),
    "RENAME": _fixed(_MAILBOX, (_mailbox, "a new mailbox name")),
    "LIST": _list,
    "LSUB": _fixed((_mailbox, "a reference name"), (_list_mailbox, "a mailbox pattern")),
    "STATUS": _fixed(_MAILBOX, (_status_items, "a list of status items")),
    "APPEND": _append,
    "FETCH": _fixed(_SEQUENCE, (_fetch_items, "fetch items")),
    "STORE": _store,
    **dict.fromkeys(("COPY", "MOVE"), _fixed(_SEQUENCE, _MAILBOX)),
    "SEARCH": _search,
    "ENABLE": _enable,
    "ID": _id,
}

_UID_COMMANDS: dict[str, Callable[[_Cursor], tuple]] = {
    **{name: _COMMANDS[name] for name in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH")},
    "EXPUNGE": _fixed(_SEQUENCE),  # RFC 4315 section 2.1
}


def parse_command(pieces: list[bytes | Literal], *, utf8: bool = False) -> Command:
    """
    A whole command as received: its first line, then for each literal the
    L{Literal} and the line that followed it (lines without CRLF, each but
    the last ending with its "{n}" or "{n+}" marker).  C{utf8} is true once
    the client has enabled UTF8=ACCEPT: mailbox names are then UTF-8 and not
    modified UTF-7 (RFC 6855 section 3).

    @raise ParseError: for any malformed command, with its tag when it has one.
    """
    cur = _Cursor(pieces, utf8)
    tag = cur.match(_TAG)
    if tag is None or cur.peek() not in ("", " "):
        raise ParseError("Expected a tag", "*")
    cur.tag = tag[0]
    cur.space("a command name")
    name = cur.atom("a command name").upper()
    uid = name == "UID"
    table = _COMMANDS
    if uid:
        cur.command = "UID"
        cur.space("a command")
        name = cur.atom("a command").upper()
        table = _UID_COMMANDS
    grammar = table.get(name)
    if grammar is None:
        cur.fail(f"Unknown command {'UID ' if uid else ''}{_printable(name)}")
    cur.command = f"UID {name}" if uid else name
    args = grammar(cur)
    cur.finish()
    return Command(cur.tag, name, uid, args)
