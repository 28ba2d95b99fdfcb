"""
Evaluating IMAP SEARCH keys (RFC 3501 6.4.4) against the messages of the
selected folder.

The session builds one L{Candidate} per message, fills in its header and body
text only when L{needs_header} / L{needs_body} say the key looks at them, and
asks L{matches}.  Nothing here touches the store or raises on a broken
message: a part that cannot be decoded is searched as best it can be, or not
at all.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.header import decode_header
from email.utils import parsedate_to_datetime
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING

from mailsrv.store.interfaces import MessageInfo

if TYPE_CHECKING:
    from mailsrv.imap.parser import SearchKey, SequenceSet

#: How much decoded body text one message contributes to BODY / TEXT at most.
MAX_BODY_TEXT = 10 * 1024 * 1024

_HEADER_OPS = frozenset({"HEADER", "TEXT", "SENTBEFORE", "SENTON", "SENTSINCE"})
_BODY_OPS = frozenset({"BODY", "TEXT"})
_FOLD = re.compile(r"\r?\n[ \t]+")
_FOLD_BYTES = re.compile(rb"\r?\n[ \t]+")
#: What follows a field's name: the colon, and the value with its
#: continuation lines (RFC 5322 2.2.3; the obsolete syntax of 4.5 allows
#: white space before the colon).
_FIELD_VALUE = re.compile(rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)")
#: Header blocks joined for one scan in L{narrow}: 256 of ~1 KB scanned
#: faster than more, while the copies stayed in the processor's cache.
_SCAN_CHUNK = 256


@dataclass(slots=True)
class Candidate:
    """
    One message of the selected folder as SEARCH sees it.

    @ivar seq: its message sequence number in this session.
    @ivar header: the raw top-level header block, when L{needs_header}.
    @ivar text: L{body_text} of the message, when L{needs_body}.
    """

    seq: int
    info: MessageInfo
    recent: bool
    header: bytes | None = None
    text: str | None = None


def needs_header(key: SearchKey) -> bool:
    """
    Whether evaluating C{key} reads the header block, so that it is only
    loaded for searches that look at it.
    """
    return _uses(key, _HEADER_OPS)


def narrow(key: SearchKey, headers: list[bytes]) -> set[int] | None:
    """
    The positions in C{headers} (each message's header block, in order)
    of the messages that may satisfy C{key}, found in one pass over them
    all; None when any may.  Only HEADER keys narrow, alone or in an AND
    or an OR: testing each of 10,000 messages in Python kept SEARCH
    SUBJECT at 4x Dovecot's time (bench/imap.py).  L{matches} still
    decides for those that remain.
    """
    if key.op == "HEADER":
        return _header_matches(*key.args, headers)
    if key.op == "AND":
        found = None
        for child in key.args:
            narrowed = narrow(child, headers)
            if narrowed is not None:
                found = narrowed if found is None else found & narrowed
        return found
    if key.op == "OR":
        either = [narrow(child, headers) for child in key.args]
        return None if None in either else either[0] | either[1]
    return None


def _header_matches(name: str, wanted: str, headers: list[bytes]) -> set[int] | None:
    """
    For L{narrow}: the messages that match C{HEADER name wanted}, or None
    for a blank key, which every message with the field matches.

    Only a value with the key's longest word, an encoded word, a byte
    that is not 7-bit or a continuation line can match (see
    L{_value_test}), so one regular expression over the header blocks
    joined finds the few fields to test, rather than Python code for each
    message: that took three times as long (bench/imap.py).  Blocks are
    joined a chunk at a time, so a huge folder is not copied whole.
    """
    if not name.isascii():
        return set()  # RFC 5322 2.2: field names are ASCII
    folded = wanted.casefold()
    words = folded.encode("ascii").split() if folded.isascii() else []
    if folded.isascii() and not words:
        return None
    pattern = _candidate_pattern(name, max(words, key=len) if words else b"")
    matches_value = _value_test(wanted)
    value_offset = 1 + len(name)  # a match starts at the line break before the name
    found = set()
    for first in range(0, len(headers), _SCAN_CHUNK):
        chunk = headers[first:first + _SCAN_CHUNK]
        # "\0" on a line of its own between blocks: a block's last line
        # can never seem to continue into the next one.
        joined = b"\n" + b"\n\0\n".join(chunk)
        starts = list(accumulate((len(header) + 3 for header in chunk), initial=1))
        for candidate in pattern.finditer(joined):
            value = _FIELD_VALUE.match(joined, candidate.start() + value_offset)
            if matches_value(value[1]):
                found.add(first + bisect_right(starts, candidate.start() + 1) - 1)
    return found


@lru_cache(maxsize=64)
def _candidate_pattern(name: str, word: bytes) -> re.Pattern[bytes]:
    """
    A field C{name} (ASCII) at a line start, up to the first sign on its
    first line that it may match (see L{_header_matches}), ignoring the
    case of ASCII letters (as a bytes pattern does): as fast as looking
    for the lower-case name in the blocks lower-cased, without that copy.
    """
    signs = [rb"=\?", rb"[\x80-\xff]", rb"\n[ \t]"] + ([re.escape(word)] if word else [])
    return re.compile(rb"\n%b[ \t]*:[^\n]*?(?:%b)"
                      % (re.escape(name.encode("ascii")), b"|".join(signs)), re.IGNORECASE)


def needs_body(key: SearchKey) -> bool:
    """
    Whether evaluating C{key} reads the body text: decoding bodies is the
    expensive part of a search.
    """
    return _uses(key, _BODY_OPS)


def _uses(key: SearchKey, ops: frozenset[str]) -> bool:
    if key.op in ops:
        return True
    return key.op in ("AND", "OR", "NOT") and any(_uses(child, ops) for child in key.args)


def matches(key: SearchKey, candidate: Candidate, *, largest_seq: int, largest_uid: int) -> bool:
    """
    Whether C{candidate} satisfies C{key}; "*" in a sequence set stands for
    C{largest_seq} or C{largest_uid} (RFC 3501 6.4.4, 9 "seq-number").
    """
    return _OPS[key.op](key.args, candidate, largest_seq, largest_uid)


def _all(args, c, ls, lu):
    return True


def _and(args, c, ls, lu):
    return all(matches(k, c, largest_seq=ls, largest_uid=lu) for k in args)


def _or(args, c, ls, lu):
    return any(matches(k, c, largest_seq=ls, largest_uid=lu) for k in args)


def _not(args, c, ls, lu):
    return not matches(args[0], c, largest_seq=ls, largest_uid=lu)


def _seq(args, c, ls, lu):
    return _in_set(c.seq, args[0], ls)


def _uid(args, c, ls, lu):
    return _in_set(c.info.uid, args[0], lu)


def _flag(args, c, ls, lu):
    wanted = args[0].casefold()
    return any(flag.casefold() == wanted for flag in c.info.flags)


def _noflag(args, c, ls, lu):
    return not _flag(args, c, ls, lu)


def _recent(args, c, ls, lu):
    return c.recent


def _header(args, c, ls, lu):
    return _header_test(*args)(c.header or b"")


@lru_cache(maxsize=64)
def _header_test(name: str, wanted: str) -> Callable[[bytes], bool]:
    """
    Whether a header block has a field C{name} whose decoded value contains
    C{wanted}, ignoring case.
    """
    if not name.isascii():
        return lambda header: False
    key = name.lower().encode("ascii")
    matches_value = _value_test(wanted)
    return lambda header: any(matches_value(raw) for raw in _raw_values(header, key))


@lru_cache(maxsize=64)
def _value_test(wanted: str) -> Callable[[bytes], bool]:
    """
    Whether a raw field value, decoded, contains C{wanted}, ignoring case:
    a test with all it needs of the key worked out once, as it may run
    for every message of the folder.

    Values that are 7-bit and have no encoded words read the same raw as
    decoded, so they are compared as bytes.  Casefolding can turn other
    characters into ASCII ("\u00df" is "ss"), so what is not 7-bit is
    decoded and casefolded.
    """
    folded = wanted.casefold()
    ascii_key = folded.encode("ascii") if folded.isascii() else None

    def test(raw: bytes) -> bool:
        if raw.isascii() and b"=?" not in raw:
            return ascii_key is not None and ascii_key in _FOLD_BYTES.sub(b" ", raw).strip().lower()
        return folded in _decode_words(_unfolded(raw)).casefold()

    return test


def _raw_values(header: bytes, key: bytes) -> Iterator[bytes]:
    """
    The raw values of every field named C{key} (lower-case) in C{header},
    found without parsing the other fields: the value is read only where a
    line starts with the name, as C{bytes.find} finds that much faster than
    a case-insensitive regular expression does.
    """
    lowered = header.lower()
    at = lowered.find(key)
    while at != -1:
        if at == 0 or header[at - 1] == 0x0A:
            found = _FIELD_VALUE.match(header, at + len(key))
            if found is not None:
                yield found[1]
        at = lowered.find(key, at + 1)


def _unfolded(raw: bytes) -> str:
    """
    A raw field value as text, unfolded: a fold and the whitespace after it
    become one space, so that a tab-folded subject matches with a space.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return _FOLD.sub(" ", text).strip()


def _body(args, c, ls, lu):
    return args[0].casefold() in (c.text or "").casefold()


def _text(args, c, ls, lu):
    wanted = args[0].casefold()
    header = "\n".join(f"{field}: {_decode_words(value)}"
                       for field, value in _fields(c.header or b""))
    return wanted in header.casefold() or _body(args, c, ls, lu)


def _internal_date(c: Candidate) -> date:
    return datetime.fromtimestamp(c.info.internal_date, UTC).date()


def _sent_date(c: Candidate) -> date | None:
    value = next((v for field, v in _fields(c.header or b"") if field == "DATE"), None)
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).date()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _dated(day_of: Callable[[Candidate], date | None], compare: Callable[[date, date], bool]):
    """
    A date op: C{compare(message_day, key_day)}; a message without a date
    never matches.
    """
    def op(args, c, ls, lu):
        day = day_of(c)
        return day is not None and compare(day, args[0])
    return op


def _larger(args, c, ls, lu):
    return c.info.size > args[0]


def _smaller(args, c, ls, lu):
    return c.info.size < args[0]


# Internal dates are compared in UTC (Dovecot uses the server's local time
# zone; this server runs in UTC).  SENT* keys use the Date: header's own day,
# "disregarding time and timezone" (RFC 3501 6.4.4); a message without a
# parseable Date: never matches them (Dovecot falls back to the internal date).
_OPS = {
    "ALL": _all, "AND": _and, "OR": _or, "NOT": _not,
    "SEQ": _seq, "UID": _uid,
    "FLAG": _flag, "NOFLAG": _noflag, "RECENT": _recent,
    "HEADER": _header, "BODY": _body, "TEXT": _text,
    "BEFORE": _dated(_internal_date, operator.lt),
    "ON": _dated(_internal_date, operator.eq),
    "SINCE": _dated(_internal_date, operator.ge),
    "SENTBEFORE": _dated(_sent_date, operator.lt),
    "SENTON": _dated(_sent_date, operator.eq),
    "SENTSINCE": _dated(_sent_date, operator.ge),
    "LARGER": _larger, "SMALLER": _smaller,
}


def _in_set(number: int, sequence_set: SequenceSet, largest: int) -> bool:
    starts, ends = _resolved(sequence_set, largest)
    index = bisect_right(starts, number) - 1
    return index >= 0 and number <= ends[index]


@lru_cache(maxsize=32)
def _resolved(sequence_set: SequenceSet, largest: int) -> tuple[list[int], list[int]]:
    """
    The set's ranges as sorted starts and ends, cached because one search
    asks once per message.
    """
    ranges = sequence_set.resolve(largest)
    return [lo for lo, _ in ranges], [hi for _, hi in ranges]


@lru_cache(maxsize=32)
def _fields(header: bytes) -> tuple[tuple[str, str], ...]:
    """
    The header block's fields as (upper-case name, value) in order, values
    unfolded (a fold and the whitespace after it become one space, so that
    a tab-folded subject matches with a space), for TEXT; cached because
    several keys often read the same header.  Values are RFC 2047 decoded
    by the keys that read them (L{_decode_words}).
    """
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        text = header.decode("latin-1")
    fields = []
    for line in _FOLD.sub(" ", text).split("\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip():
            fields.append((name.strip().upper(), value.strip()))
    return tuple(fields)


def _decode_words(value: str) -> str:
    """
    A header value with its RFC 2047 encoded words decoded; a word in an
    unknown charset is read as UTF-8, an undecodable one left as written.
    """
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except HeaderParseError:
        return value
    return "".join(_decode(chunk, charset or "raw-unicode-escape") if isinstance(chunk, bytes)
                   else chunk for chunk, charset in chunks)


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def body_text(message: bytes) -> str:
    """
    The text BODY and TEXT search in a whole message: the decoded content of
    every text/* part, including those of attached messages, joined by
    newlines.  Other parts (images, archives) are not text, so neither their
    content nor its base64 is searched.  Capped at L{MAX_BODY_TEXT}.
    """
    texts, size = [], 0
    try:
        for part in message_from_bytes(message, policy=policy.default).walk():
            if part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset()
            # Undeclared or US-ASCII text is often UTF-8 in practice; UTF-8 reads ASCII too.
            text = _decode(payload, "utf-8" if charset in (None, "us-ascii") else charset)
            texts.append(text[:MAX_BODY_TEXT - size])
            size += len(texts[-1])
            if size >= MAX_BODY_TEXT:
                break
    except Exception:
        # The email package's header parser has crashed on malformed input
        # before; a search then sees the text found so far.
        pass
    return "\n".join(texts)
