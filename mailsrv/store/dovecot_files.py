"""
Dovecot's Maildir side files, read and written in Dovecot's own formats so
that the same Maildir can be served by Dovecot and by mailsrv, either way:

- C{dovecot-uidlist} (version 3): UIDVALIDITY, the next UID, and the UID of
  each message by its base file name;
- C{dovecot-uidlist.lock}: the dotlock that serializes UID assignment
  (created with O_EXCL; a new list is written into it and renamed over the
  old one);
- C{dovecot-keywords}: which keyword each flag letter a-z stands for;
- C{dovecot-uidvalidity}: the last UIDVALIDITY given out for this user;
- C{subscriptions}: subscribed folders (version 2: names in modified UTF-7,
  levels separated by TAB).

The formats were checked against files Dovecot 2.3 writes and reads
(maildir-uidlist.c, maildir-keywords.c, mailbox-uidvalidity.c,
subscription-file.c).

All of this is blocking file I/O: call it in a thread.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import twisted.mail.imap4  # noqa: F401 (registers the "imap4-utf-7" codec)

from mailsrv.files import fsync_with_directories, write_atomically
from mailsrv.store.interfaces import TemporaryStoreError

UIDLIST = "dovecot-uidlist"
LOCK = "dovecot-uidlist.lock"
KEYWORDS = "dovecot-keywords"
UIDVALIDITY = "dovecot-uidvalidity"
SUBSCRIPTIONS = "subscriptions"

#: A lock file older than this is left from a crash and may be broken
#: (Dovecot's own stale timeout for the uidlist lock is two minutes).
STALE_LOCK_SECONDS = 120.0
#: How long to wait for another process's lock before giving up (temporary
#: failure: the client retries).
LOCK_WAIT_SECONDS = 30.0
#: A lock naming a dead process on this host is broken once this old.
DEAD_OWNER_SECONDS = 2.0

_HOST = socket.gethostname()

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

    @ivar inode: the file this was read from, and C{size} how many of its
        bytes: a list that has only grown since (Dovecot and mailsrv append
        new records under the lock) is brought up to date by reading the
        new lines alone.
    """

    uidvalidity: int
    next_uid: int
    guid: str
    records: list[UidRecord] = field(default_factory=list)
    uid_of: dict[str, int] = field(default_factory=dict)
    inode: int = 0
    size: int = 0

    def add(self, record: UidRecord) -> None:
        self.records.append(record)
        self.uid_of[record.base] = record.uid
        self.next_uid = max(self.next_uid, record.uid + 1)

    def _read_records(self, data: bytes) -> int:
        """
        Add the records in C{data}; return how many bytes were whole lines
        (a line still being written by another process waits for next time).
        """
        end = data.rfind(b"\n") + 1
        last = self.records[-1].uid if self.records else 0
        for line in data[:end].decode("utf-8", "surrogateescape").splitlines():
            head, sep, filename = line.partition(" :")
            uid_text, _, extensions = head.partition(" ")
            if not sep or not uid_text.isdigit() or int(uid_text) <= last:
                continue
            last = int(uid_text)
            self.add(UidRecord(last, filename.partition(":")[0], extensions))
        return end


def read_uidlist(folder: Path, known: UidList | None = None) -> UidList | None:
    """
    The folder's uidlist as it is now; L{None} when it does not exist or is
    not a version 3 list we understand (the caller then starts a new one).

    @param known: the list as last read; returned brought up to date when
        the file has only grown since, so a large list is not parsed again.
    """
    try:
        with open(folder / UIDLIST, "rb") as f:
            st = os.fstat(f.fileno())
            if known is not None and known.inode == st.st_ino and st.st_size >= known.size:
                if st.st_size > known.size:
                    f.seek(known.size)
                    known.size += known._read_records(f.read())
                return known
            data = f.read()
    except FileNotFoundError:
        return None
    header_end = data.find(b"\n") + 1
    fields_ = {item[:1]: item[1:] for item in data[:header_end].split()}
    if fields_.get(b"3") != b"":
        return None
    try:
        uidlist = UidList(int(fields_[b"V"]), int(fields_.get(b"N", b"1")),
                          fields_.get(b"G", b"").decode("ascii"), inode=st.st_ino)
    except (KeyError, ValueError):
        return None
    # Appended records may be newer than the header's next UID (add() keeps
    # next_uid above every record).
    uidlist.size = header_end + uidlist._read_records(data[header_end:])
    return uidlist


def _record_line(record: UidRecord) -> str:
    extensions = f" {record.extensions}" if record.extensions else ""
    return f"{record.uid}{extensions} :{record.base}\n"


def write_uidlist(folder: Path, uidlist: UidList) -> None:
    """
    Write the whole list and rename it into place, as Dovecot does.  The
    caller holds the lock (L{uidlist_lock}).
    """
    lines = [f"3 V{uidlist.uidvalidity} N{uidlist.next_uid} G{uidlist.guid}\n"]
    lines += [_record_line(r) for r in uidlist.records]
    data = "".join(lines).encode("utf-8", "surrogateescape")
    write_atomically(folder / UIDLIST, data, 0o600)
    uidlist.inode = os.stat(folder / UIDLIST).st_ino
    uidlist.size = len(data)


def append_records(folder: Path, uidlist: UidList, records: list[UidRecord],
                   directories: Iterable[Path] = ()) -> None:
    """
    Add new records to the list and append them to its file (the caller
    holds the lock); readers take the next UID from the last record when it
    passes the header's, as Dovecot does.

    @param directories: made durable together with the records.
    """
    data = "".join(_record_line(r) for r in records).encode("utf-8", "surrogateescape")
    with open(folder / UIDLIST, "ab") as f:
        f.write(data)
        f.flush()
        fsync_with_directories(f.fileno(), directories)
    for record in records:
        uidlist.add(record)
    uidlist.size += len(data)


@contextmanager
def uidlist_lock(folder: Path) -> Iterator[None]:
    """
    Hold Dovecot's dotlock on the folder's uidlist.

    The lock file holds C{pid:host}, as Dovecot writes it.  A lock untouched
    for L{STALE_LOCK_SECONDS}, or one left by a process of this host that no
    longer exists, is broken.

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
            if _stale(path):
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise TemporaryStoreError(f"{folder}: the UID list is locked by another "
                                          "process") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    try:
        os.write(fd, f"{os.getpid()}:{_HOST}".encode())
    finally:
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def _stale(path: Path) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
        owner = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return False
    if age > STALE_LOCK_SECONDS:
        return True
    if age > DEAD_OWNER_SECONDS and not owner:
        # Its maker died between creating it and writing its name (a kill
        # there blocked the folder for two minutes: tests/test_store_crash).
        return True
    match = re.fullmatch(r"(\d+):(.*)", owner)
    if age > DEAD_OWNER_SECONDS and match and match.group(2) == _HOST:
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


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


def next_uidvalidity(user_root: Path) -> int:
    """
    Give out a UIDVALIDITY for a new folder: the time, or one more than the
    last given to this user if that is later.  Dovecot's allocator: the
    empty file C{dovecot-uidvalidity.<hex>} is renamed to the new value
    (the atomic step), then C{dovecot-uidvalidity} is rewritten.
    """
    try:
        last = int((user_root / UIDVALIDITY).read_text().strip() or "0", 16)
    except (FileNotFoundError, ValueError):
        last = 0
    markers = [p for p in user_root.glob(UIDVALIDITY + ".*")
               if re.fullmatch(r"[0-9a-f]{8}", p.suffix[1:])]
    for marker in markers:
        last = max(last, int(marker.suffix[1:], 16))
    value = max(int(time.time()), last + 1)
    new_marker = user_root / f"{UIDVALIDITY}.{value:08x}"
    if markers:
        os.rename(markers[0], new_marker)
    else:
        os.close(os.open(new_marker, os.O_WRONLY | os.O_CREAT, 0o444))
    write_atomically(user_root / UIDVALIDITY, f"{value:08x}".encode(), 0o600)
    return value


def read_subscriptions(user_root: Path) -> list[str]:
    """
    Subscribed folder names (Unicode, "." between levels).
    """
    try:
        lines = (user_root / SUBSCRIPTIONS).read_text("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []
    if lines[:1] == ["V\t2"]:
        names = []
        for line in lines[2:]:
            try:
                names.append(".".join(level.encode("ascii").decode("imap4-utf-7")
                                      for level in line.split("\t")))
            except (UnicodeError, ValueError):
                continue
        return [n for n in names if n]
    return [line for line in lines if line]


def write_subscriptions(user_root: Path, names: list[str]) -> None:
    lines = ["\t".join(level.encode("imap4-utf-7").decode("ascii")
                       for level in name.split(".")) for name in names]
    text = "V\t2\n\n" + "".join(line + "\n" for line in lines)
    write_atomically(user_root / SUBSCRIPTIONS, text.encode("ascii"), 0o600)
