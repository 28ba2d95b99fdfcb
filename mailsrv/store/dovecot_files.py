"""
Dovecot's Maildir side files, read and written in Dovecot's own formats so
that the same Maildir can be served by Dovecot and by mailsrv, either way:

- C{dovecot-uidlist} (version 3): UIDVALIDITY, the next UID, and the UID of
  each message by its base file name;
- C{dovecot-uidlist.lock}: the dotlock that serializes UID assignment
  (created with O_EXCL; a new list is written into it and renamed over the
  old one);
- C{dovecot-keywords}: which keyword each flag letter a-z stands for.

All of this is blocking file I/O: call it in a thread.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mailsrv.files import write_atomically
from mailsrv.store.interfaces import TemporaryStoreError

UIDLIST = "dovecot-uidlist"
LOCK = "dovecot-uidlist.lock"
KEYWORDS = "dovecot-keywords"

#: A lock file older than this is left from a crash and may be broken
#: (Dovecot's own stale timeout for the uidlist lock is two minutes).
STALE_LOCK_SECONDS = 120.0
#: How long to wait for another process's lock before giving up (temporary
#: failure: the client retries).
LOCK_WAIT_SECONDS = 30.0

#: Keywords a Maildir folder can hold: one file-name letter each.
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class UidRecord:
    uid: int
    base: str
    extensions: str = ""


@dataclass
class UidList:
    """
    The contents of C{dovecot-uidlist}; C{records} are in UID order.
    """

    uidvalidity: int
    next_uid: int
    guid: str
    records: list[UidRecord] = field(default_factory=list)


def read_uidlist(folder: Path) -> UidList | None:
    """
    Parse the folder's uidlist; L{None} when it does not exist or is not a
    version 3 list we understand (the caller then starts a new one).
    """
    try:
        with open(folder / UIDLIST, encoding="utf-8", errors="surrogateescape") as f:
            header = f.readline().split()
            if not header or header[0] != "3":
                return None
            fields_ = {item[0]: item[1:] for item in header[1:] if item}
            uidlist = UidList(int(fields_["V"]), int(fields_.get("N", "1")),
                              fields_.get("G", ""))
            last = 0
            for line in f:
                head, sep, base = line.rstrip("\n").partition(" :")
                if not sep:
                    continue
                uid_text, _, extensions = head.partition(" ")
                uid = int(uid_text)
                if uid <= last:
                    continue
                last = uid
                uidlist.records.append(UidRecord(uid, base, extensions))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError):
        return None
    # Appended records may be newer than the header's next UID.
    uidlist.next_uid = max(uidlist.next_uid, last + 1)
    return uidlist


def _record_line(record: UidRecord) -> str:
    extensions = f" {record.extensions}" if record.extensions else ""
    return f"{record.uid}{extensions} :{record.base}\n"


def write_uidlist(folder: Path, uidlist: UidList) -> None:
    """
    Write the whole list through the lock file and rename it into place,
    as Dovecot does.  The caller holds the lock (L{uidlist_lock}).
    """
    lines = [f"3 V{uidlist.uidvalidity} N{uidlist.next_uid} G{uidlist.guid}\n"]
    lines += [_record_line(r) for r in uidlist.records]
    lock_path = folder / LOCK
    with open(lock_path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.rename(lock_path, folder / UIDLIST)


def append_records(folder: Path, records: Iterable[UidRecord]) -> None:
    """
    Append new records to the list (the caller holds the lock); readers
    take the next UID from the last record when it passes the header's.
    """
    with open(folder / UIDLIST, "a", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(_record_line(r) for r in records)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def uidlist_lock(folder: Path) -> Iterator[None]:
    """
    Hold Dovecot's dotlock on the folder's uidlist.

    A lock older than L{STALE_LOCK_SECONDS} is broken.  The lock is released
    by removing the file, unless L{write_uidlist} already renamed it.

    @raise TemporaryStoreError: if another process holds it too long.
    """
    path = folder / LOCK
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = 0.001
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            try:
                age = time.time() - os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_LOCK_SECONDS:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise TemporaryStoreError(f"{folder}: the UID list is locked by another "
                                          "process") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def read_keywords(folder: Path) -> list[str | None]:
    """
    Keyword names by letter index (a=0); L{None} where a letter is unused.
    """
    keywords: list[str | None] = []
    try:
        text = (folder / KEYWORDS).read_text("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return keywords
    for line in text.splitlines():
        index_text, _, name = line.partition(" ")
        if not index_text.isdigit() or not name or int(index_text) >= len(KEYWORD_LETTERS):
            continue
        index = int(index_text)
        keywords.extend([None] * (index + 1 - len(keywords)))
        keywords[index] = name
    return keywords


def write_keywords(folder: Path, keywords: list[str | None]) -> None:
    """
    Replace the keywords file atomically.
    """
    text = "".join(f"{i} {name}\n" for i, name in enumerate(keywords) if name)
    write_atomically(folder / KEYWORDS, text.encode("utf-8", "surrogateescape"))
