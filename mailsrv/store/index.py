"""
A folder's index cache: what mailsrv knows of each message beyond its file
name (size with CRLF line ends, internal date, modification sequence, and
its raw header block and MIME outline), so that opening a large folder does
not stat every file and listing ENVELOPEs does not read them.

One SQLite file per folder, C{mailsrv.index.sqlite}, beside Dovecot's own
index files and as unknown to Dovecot as those are to us.  It is a cache:
the Maildir and C{dovecot-uidlist} are the truth, and a lost or damaged
index is rebuilt from them (modification sequences then restart above the
clock, so they never go backwards).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INDEX = "mailsrv.index.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    base TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    vsize INTEGER NOT NULL,
    mtime REAL NOT NULL,
    modseq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS header (base TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outline (base TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
#: Headers and outlines have tables of their own: they are written in UID
#: order, long after the message rows (in directory order), and updating
#: those rows in place rewrote a page per message (a 10,000-message folder's
#: first header FETCH spent 0.8 s committing; bench/imap.py).
_CACHES = ("header", "outline")
#: The write-ahead log is copied into the database (a checkpoint, with two
#: fsyncs) when the store calls L{FolderIndex.checkpoint} after a burst of
#: writes, not by SQLite in the middle of one: a 10,000-message folder's
#: first header FETCH spent 0.15 s in checkpoints (bench/imap.py).  Beyond
#: this size the log is checkpointed at once anyway.
WAL_LIMIT = 64 * 1024 * 1024


@dataclass(slots=True)
class IndexEntry:
    size: int
    vsize: int
    mtime: float
    modseq: int


#: Header blocks kept in memory, for all folders together.
HEADER_CACHE_BYTES = 64 * 1024 * 1024


class HeaderCache:
    """
    The header blocks of the folders used last, in memory within a byte
    budget (whole folders are dropped, least recently used first): a
    client that lists a folder's ENVELOPEs and then searches it, or syncs
    it again, is answered without loading them from the index again (a
    SEARCH SUBJECT of 10,000 messages spent a third of its time there;
    bench/imap.py).  Thread-safe: folders are used from any pool thread.
    """

    def __init__(self, budget: int = HEADER_CACHE_BYTES):
        self._budget = budget
        self._folders: OrderedDict[Path, dict[str, bytes]] = OrderedDict()
        self._sizes: dict[Path, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def get(self, folder: Path, wanted: dict[int, str]) -> dict[int, bytes]:
        """
        The cached header blocks of these messages by UID (C{wanted} gives
        each one's base name by UID).
        """
        with self._lock:
            headers = self._folders.get(folder)
            if headers is None:
                return {}
            self._folders.move_to_end(folder)
            return {uid: header for uid, base in wanted.items()
                    if (header := headers.get(base)) is not None}

    def put(self, folder: Path, headers: dict[str, bytes]) -> None:
        with self._lock:
            cached = self._folders.setdefault(folder, {})
            self._folders.move_to_end(folder)
            added = 0
            for base, header in headers.items():
                added += len(header) - len(cached.get(base, b""))
                cached[base] = header
            self._sizes[folder] = self._sizes.get(folder, 0) + added
            self._total += added
            while self._total > self._budget and self._folders:
                oldest, _ = self._folders.popitem(last=False)
                self._total -= self._sizes.pop(oldest)

    def drop(self, folder: Path, bases: Iterable[str]) -> None:
        with self._lock:
            cached = self._folders.get(folder)
            if cached is not None:
                removed = sum(len(cached.pop(base, b"")) for base in bases)
                self._sizes[folder] -= removed
                self._total -= removed


class OpenIndexes:
    """
    Keeps at most C{limit} folder indexes open, closing the least recently
    used idle one when another opens, so a server with many users does not
    hold a file open for every folder it ever touched (and closing, which
    checkpoints the WAL with an fsync, is not paid on every operation).
    Also holds the store's L{HeaderCache}.
    """

    def __init__(self, limit: int = 256):
        self._limit = limit
        self._open: OrderedDict[FolderIndex, None] = OrderedDict()
        self._lock = threading.Lock()
        self.headers = HeaderCache()

    def used(self, index: FolderIndex) -> None:
        with self._lock:
            self._open[index] = None
            self._open.move_to_end(index)
            candidates = list(self._open)[:max(0, len(self._open) - self._limit)]
        for other in candidates:
            if other is not index and other.in_use.acquire(blocking=False):
                try:
                    other.release()
                finally:
                    other.in_use.release()

    def closed(self, index: FolderIndex) -> None:
        with self._lock:
            self._open.pop(index, None)


class FolderIndex:
    """
    The index of one folder.  Not thread-safe: the folder's lock serializes
    every use, from whichever pool thread holds it, and that thread holds
    C{in_use} meanwhile, so that L{OpenIndexes} closes only idle indexes.
    The database opens again on the next use.
    """

    def __init__(self, folder: Path, registry: OpenIndexes | None = None):
        self.path = folder / INDEX
        self.in_use = threading.Lock()
        self._registry = registry or OpenIndexes()
        self._connection: sqlite3.Connection | None = None
        self._prepared = False
        #: Written since the last checkpoint.
        self.unchecked = False

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
            self._registry.used(self)
        return self._connection

    def release(self) -> None:
        """
        Close the database until the next use.
        """
        if self._connection is not None:
            self._connection.close()  # the last connection to close checkpoints
            self._connection = None
            self.unchecked = False
            self._registry.closed(self)

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(self.path, check_same_thread=False,
                                     isolation_level=None)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA wal_autocheckpoint=0")
                if not self._prepared:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                    columns = {row[1] for row in db.execute("PRAGMA table_info(message)")}
                    if "outline" in columns:  # outlines were once kept in this table
                        db.execute("ALTER TABLE message DROP COLUMN outline")
                    self._prepared = True
                return db
            except sqlite3.DatabaseError:
                if attempt == 2:
                    raise
                for suffix in ("", "-wal", "-shm"):
                    Path(str(self.path) + suffix).unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def load(self) -> tuple[dict[str, IndexEntry], int]:
        """
        Every cached entry by base file name, and the highest modseq.
        """
        entries = {base: IndexEntry(size, vsize, mtime, modseq) for base, size, vsize, mtime,
                   modseq in self._db.execute("SELECT base, size, vsize, mtime, modseq "
                                              "FROM message")}
        row = self._db.execute("SELECT value FROM meta WHERE key = 'highest_modseq'").fetchone()
        if row is None:
            # New or rebuilt: start above anything a lost index could have held.
            highest = max([e.modseq for e in entries.values()] + [int(time.time())])
        else:
            highest = row[0]
        return entries, highest

    def update(self, entries: Iterable[tuple[str, IndexEntry]], removed: Iterable[str],
               highest_modseq: int) -> None:
        """
        Write changed entries, drop removed ones, and record the highest
        modseq, in one transaction.
        """
        with self._transaction():
            self._db.executemany(
                "INSERT INTO message (base, size, vsize, mtime, modseq) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(base) DO UPDATE SET size = excluded.size, vsize = excluded.vsize, "
                "mtime = excluded.mtime, modseq = excluded.modseq",
                [(b, e.size, e.vsize, e.mtime, e.modseq) for b, e in entries])
            removed = list(removed)
            self._registry.headers.drop(self.path, removed)
            gone = [(b,) for b in removed]
            for table in ("message", *_CACHES):
                self._db.executemany(f"DELETE FROM {table} WHERE base = ?", gone)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('highest_modseq', ?)",
                             (highest_modseq,))

    def outlines(self, wanted: dict[int, str], most: bool = False) -> dict[int, str]:
        """
        The stored outlines (see L{mailsrv.store.summary}) of these messages,
        by UID, for those that have one (C{wanted} gives each one's base
        name by UID).  C{most} says that they are most of the folder: one
        pass over the table is then faster than looking each up.
        """
        stored = self._column("outline", list(wanted.values()), most)
        return {uid: stored[base] for uid, base in wanted.items() if base in stored}

    def headers(self, wanted: dict[int, str], most: bool = False) -> dict[int, bytes]:
        """
        The stored header blocks of these messages, for those that have one;
        C{wanted} and C{most} as for L{outlines}.
        """
        cache = self._registry.headers
        found = cache.get(self.path, wanted)
        if len(found) < len(wanted):
            missing = {uid: base for uid, base in wanted.items() if uid not in found}
            loaded = self._column("header", list(missing.values()),
                                  most and 2 * len(missing) > len(wanted))
            cache.put(self.path, loaded)
            found.update((uid, loaded[base]) for uid, base in missing.items() if base in loaded)
        return found

    def _column(self, table: str, bases: list[str], most: bool) -> dict:
        query = f"SELECT base, data FROM {table}"
        if most:
            wanted = set(bases)
            return {base: value for base, value in self._db.execute(query) if base in wanted}
        found = {}
        for i in range(0, len(bases), 500):
            chunk = bases[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"{query} WHERE base IN ({marks})", chunk))
        return found

    def set_headers(self, headers: dict[str, bytes]) -> None:
        self._insert(header=headers.items())

    def set_outlines(self, outlines: dict[str, tuple[bytes, str]]) -> None:
        """
        Store the (header block, outline) of these messages.
        """
        self._insert(header=[(base, header) for base, (header, _) in outlines.items()],
                     outline=[(base, text) for base, (_, text) in outlines.items()])

    def _insert(self, **rows_by_table: Iterable[tuple[str, bytes | str]]) -> None:
        if "header" in rows_by_table:
            rows_by_table["header"] = list(rows_by_table["header"])
            self._registry.headers.put(self.path, dict(rows_by_table["header"]))
        with self._transaction():
            for table, rows in rows_by_table.items():
                self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._db:
            self._db.execute("BEGIN")
            yield
        self.unchecked = True
        try:
            oversized = os.stat(f"{self.path}-wal").st_size > WAL_LIMIT
        except FileNotFoundError:
            oversized = False
        if oversized:
            self.checkpoint()

    def checkpoint(self) -> None:
        """
        Copy the write-ahead log into the database and empty it (under the
        folder's lock, on this index's connection).
        """
        if self._connection is not None:
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.unchecked = False

    def checkpoint_aside(self) -> None:
        """
        Copy the write-ahead log into the database on a connection of its
        own, from any thread, while the folder is in use: a passive
        checkpoint waits for no reader or writer, and its fsyncs (0.15 s
        for a 10,000-message folder's headers) then hold up no command.
        """
        self.unchecked = False  # a write from now on asks for another
        try:
            aside = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, isolation_level=None)
        except sqlite3.OperationalError:
            return  # the folder is gone
        try:
            aside.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            aside.close()

    def close(self) -> None:
        self.release()
