"""
The default store: Maildir++ as Dovecot and Courier lay it out, so that an
existing Dovecot Maildir can be served as it is, and ours by Dovecot.

    <root>/<domain>/<local>/          the user's INBOX (cur/ new/ tmp/)
    <root>/<domain>/<local>/.A.B/     folder "A.B" (levels in modified UTF-7)

Flags are the C{:2,} suffix of each file name (keywords as letters a-z
mapped in C{dovecot-keywords}); UIDs live in C{dovecot-uidlist}; the
internal date is the file's mtime.  Our own cache (L{FolderIndex}) adds
sizes and modification sequences.

A message is written to C{tmp/}, fsync'd, renamed into C{new/} (or C{cur/}
when it has flags), and the directory fsync'd before the caller hears of
it.  A delivery (SMTP) is then done: the folder's next sync gives it its
UID, as it does to mail other programs drop in; deliveries that arrive
together are written in one batch that fsyncs the directory once
(L{DeliveryBatches}).  An append gets its UID first; appends that
arrive together share the directory fsync and the UID list write.  All disk
work runs in a thread pool; work on one folder is serialized by a
per-folder lock, folders proceed in parallel.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import inotify
from twisted.internet.defer import Deferred, DeferredLock
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from mailsrv.files import fsync_directory, write_atomically
from mailsrv.logs import get_logger
from mailsrv.store import dovecot_files, summary
from mailsrv.store.deliveries import DeliveryBatches
from mailsrv.store.dovecot_files import KEYWORD_LETTERS, UidList, UidRecord
from mailsrv.store.index import FolderIndex, IndexEntry, OpenIndexes
from mailsrv.store.interfaces import (
    INBOX,
    AppendResult,
    CopyResult,
    FlagsChanged,
    FolderDeleted,
    FolderExists,
    FolderInfo,
    FolderSnapshot,
    FolderStatus,
    IMailStore,
    IUserStore,
    MessageInfo,
    MessagesAdded,
    MessagesExpunged,
    NoSuchFolder,
    OverQuota,
    StoreError,
    TemporaryStoreError,
    TooManyKeywords,
)
from mailsrv.store.names import (
    folder_directory,
    folder_name_from_directory,
    is_inside,
    normalize_folder_name,
    parent_names,
)
from mailsrv.store.summary import PartOutline, to_crlf

log = get_logger(__name__)

#: Maildir info letters for IMAP system flags (maildir(5), Dovecot).
_FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S",
                 "\\Deleted": "T"}
_LETTER_FLAGS = {v: k for k, v in _FLAG_LETTERS.items()}

#: Folders every new user gets, with their special use (RFC 6154).
DEFAULT_FOLDERS = (("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Archive", "\\Archive"),
                   ("Junk", "\\Junk"), ("Trash", "\\Trash"))

#: Special use guessed from the name for folders we did not create
#: (a Maildir brought from another server).
_USE_BY_NAME = {"drafts": "\\Drafts", "sent": "\\Sent", "sent items": "\\Sent",
                "sent messages": "\\Sent", "archive": "\\Archive", "archives": "\\Archive",
                "junk": "\\Junk", "spam": "\\Junk", "trash": "\\Trash",
                "deleted items": "\\Trash", "deleted messages": "\\Trash"}

SPECIAL_USE_FILE = "mailsrv-special-use"
#: Seconds to gather a burst of file events before looking at the folder.
RESYNC_DELAY = 0.05
#: How long after its last write a folder index's log is checkpointed
#: (L{FolderIndex.checkpoint}): not in the middle of a burst of writes.
CHECKPOINT_DELAY = 1.0
#: A directory untouched this long (ns) before a scan can be trusted to show
#: any later change in its mtime, whatever the file system's time precision.
QUIET_NS = 2_000_000_000
#: UID lists shorter than this are never compacted.
COMPACT_MIN_RECORDS = 64
TMP_MAX_AGE = 36 * 3600

_CHUNK = 64 * 1024
_WATCH_MASK = (inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
               | inotify.IN_DELETE)


class _INotify(inotify.INotify):
    """
    Twisted's, except that a watched directory being removed does not end
    the watching of every other: Twisted's calls loseConnection on any
    IN_DELETE_SELF, and after a folder was deleted no idling session heard
    of new mail any more (tests/test_imap_mailboxes.py).
    """

    _stopping = False

    def loseConnection(self):
        if self._stopping:
            super().loseConnection()

    def stop(self) -> None:
        self._stopping = True
        self.loseConnection()


_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
_sequence = itertools.count()


def user_directory(root: Path, address: str) -> Path:
    """
    Where a user's Maildir lives: C{root/<domain>/<local>}.

    @raise StoreError: for an address that could address anything else.
    """
    local, _, domain = address.rpartition("@")
    for part in (local, domain):
        if (not part or part.startswith(".") or "/" in part or "\\" in part
                or not part.isprintable() or len(part.encode("utf-8")) > 255):
            raise StoreError(f"not a storable address: {address!r}")
    return root / domain / local


def _unique_name() -> str:
    now = time.time()
    return (f"{int(now)}.M{int((now % 1) * 1e6):06d}P{os.getpid()}"
            f"Q{next(_sequence)}.{_HOST}")


def _arrival_order(base: str) -> tuple[int, int, str]:
    """
    Dovecot's order for giving UIDs to new files: seconds, then
    microseconds, then the name (maildir_filename_sort_cmp).
    """
    seconds, _, rest = base.partition(".")
    micro = rest[1:].partition("P")[0] if rest.startswith("M") else ""
    return (int(seconds) if seconds.isdigit() else 0,
            int(micro) if micro.isdigit() else 0, base)


_SIZE_FIELD = re.compile(r",([SW])=([0-9]+)(?=,|\Z)")
_USUAL_SIZES = re.compile(r",S=([0-9]+),W=([0-9]+)\Z")


def _split_name(name: str) -> tuple[str, str]:
    """
    A Maildir file name's base and its flag letters.
    """
    base, _, info = name.partition(":")
    return base, info[2:] if info.startswith("2,") else ""


def _size_from_base(base: str) -> tuple[int | None, int | None]:
    """
    The S= (file size) and W= (CRLF size) fields of a Maildir base name:
    in the order Dovecot writes them, with one match.
    """
    usual = _USUAL_SIZES.search(base)
    if usual is not None:
        return int(usual.group(1)), int(usual.group(2))
    sizes = dict(_SIZE_FIELD.findall(base))
    size, vsize = sizes.get("S"), sizes.get("W")
    return int(size) if size else None, int(vsize) if vsize else None


def _crlf_size(path: Path) -> int:
    """
    The size of a file once every bare LF is a CRLF (IMAP RFC822.SIZE).
    """
    size = 0
    previous = b""
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
            if previous == b"\r" and chunk.startswith(b"\n"):
                size -= 1
            previous = chunk[-1:]
    return size


@dataclass(slots=True)
class _Message:
    base: str
    subdir: str
    letters: str
    entry: IndexEntry

    @property
    def filename(self) -> str:
        return f"{self.base}:2,{self.letters}" if self.subdir == "cur" else self.base


class _Folder:
    """
    The loaded state of one folder.  Only touched from a pool thread that
    holds the folder's lock.
    """

    def __init__(self, name: str, directory: Path, user_root: Path,
                 open_indexes: OpenIndexes):
        self.name = name
        self.directory = directory
        self._directory_text = str(directory)
        self.user_root = user_root
        self.index = FolderIndex(directory, open_indexes)
        self.uidlist: UidList | None = None
        self.messages: dict[int, _Message] = {}
        self.keywords: list[str | None] = dovecot_files.read_keywords(directory)
        self.cached: dict[str, IndexEntry] | None = None
        self.highest_modseq = 0
        self.synced = False
        self._quiet_stamps = None

    # -- reading the disk -------------------------------------------------

    def _scan(self) -> dict[str, tuple[str, str]]:
        found = {}
        for subdir in ("new", "cur"):
            try:
                entries = os.scandir(self.directory / subdir)
            except FileNotFoundError:
                raise NoSuchFolder(f"no folder named {self.name}") from None
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    base, letters = _split_name(entry.name)
                    found[base] = (subdir, letters if subdir == "cur" else "")
        return found

    def _refresh_uidlist(self) -> bool:
        """
        Bring the UID list up to date (only new lines are read when the file
        just grew); return whether it changed.
        """
        before = (self.uidlist.inode, self.uidlist.size) if self.uidlist else None
        self.uidlist = dovecot_files.read_uidlist(self.directory, self.uidlist)
        return before != ((self.uidlist.inode, self.uidlist.size) if self.uidlist else None)

    def sync(self) -> tuple[list[int], list[int], list[int]]:
        """
        Bring the state in line with the disk: messages that appeared (given
        UIDs if they have none), disappeared, or changed flags elsewhere.

        A folder whose new/ and cur/ have not changed since a scan made when
        they had been quiet for a while is not scanned again: any change to
        a directory's entries moves its mtime, as Dovecot relies on too.

        @return: (added UIDs, expunged UIDs, UIDs whose flags changed).
        """
        if self.cached is None:
            self.cached, self.highest_modseq = self.index.load()
        stamps = self._directory_stamps()
        previous_validity = self.uidvalidity
        uidlist_changed = self._refresh_uidlist()
        if stamps == self._quiet_stamps and not uidlist_changed:
            return [], [], []
        if self.uidvalidity != previous_validity:
            self.messages = {}  # a new UID list: every UID means another message
        on_disk = self._scan()
        known = {m.base: uid for uid, m in self.messages.items()}
        listed = self.uidlist.uid_of if self.uidlist else {}
        unlisted = sorted((base for base in on_disk if base not in listed), key=_arrival_order)
        if unlisted or self.uidlist is None:
            listed = self._assign_uids(unlisted)

        added, changed, index_updates, on_disk_gone = [], [], [], []
        for base, (subdir, letters) in on_disk.items():
            uid = listed.get(base)
            if uid is None:
                continue
            message = self.messages.get(uid)
            if message is None:
                entry = self.cached.get(base) or self._measure(subdir, base, letters)
                if entry is None:
                    on_disk_gone.append(base)
                    continue
                if base not in self.cached:
                    self.cached[base] = entry
                    index_updates.append((base, entry))
                self.messages[uid] = _Message(base, subdir, letters, entry)
                added.append(uid)
            elif (message.subdir, message.letters) != (subdir, letters):
                message.subdir, message.letters = subdir, letters
                self.highest_modseq += 1
                message.entry.modseq = self.highest_modseq
                index_updates.append((base, message.entry))
                changed.append(uid)
        for base in on_disk_gone:
            del on_disk[base]
        expunged = [uid for base, uid in known.items() if base not in on_disk]
        for uid in expunged:
            del self.messages[uid]
        removed = [b for b in self.cached if b not in on_disk]
        for base in removed:
            del self.cached[base]
        if index_updates or removed or changed:
            self.index.update(index_updates, removed, self.highest_modseq)
        if changed and self._keywords_unknown():
            self.keywords = dovecot_files.read_keywords(self.directory)
        self.synced = True
        now = time.time_ns()
        quiet = all(now - stamp > QUIET_NS for stamp in stamps)
        self._quiet_stamps = stamps if quiet else None
        return sorted(added), sorted(expunged), sorted(changed)

    def _directory_stamps(self) -> tuple[int, int]:
        try:
            return (os.stat(self.directory / "new").st_mtime_ns,
                    os.stat(self.directory / "cur").st_mtime_ns)
        except FileNotFoundError:
            raise NoSuchFolder(f"no folder named {self.name}") from None

    def _keywords_unknown(self) -> bool:
        return any(self._letter_index(letter) is None
                   for m in self.messages.values() for letter in m.letters if letter.islower())

    def _letter_index(self, letter: str) -> int | None:
        index = KEYWORD_LETTERS.index(letter)
        return index if index < len(self.keywords) and self.keywords[index] else None

    def _measure(self, subdir: str, base: str, letters: str) -> IndexEntry | None:
        """
        Size, CRLF size and date of a file new to us; L{None} if it is gone.
        """
        # Plain strings: this runs once per message when a large folder is
        # first opened, and Path objects cost more than the stat.
        name = f"{base}:2,{letters}" if subdir == "cur" else base
        path = f"{self._directory_text}/{subdir}/{name}"
        try:
            st = os.stat(path)
            size, vsize = _size_from_base(base)
            if vsize is None:
                vsize = _crlf_size(path)
        except FileNotFoundError:
            return None
        self.highest_modseq += 1
        return IndexEntry(size or st.st_size, vsize, st.st_mtime, self.highest_modseq)

    def _assign_uids(self, bases: list[str], directories: Iterable[Path] = ()
                     ) -> dict[str, int]:
        """
        Give UIDs, in the order given, to files the list does not have yet,
        under Dovecot's lock; start the list if there is none.

        @param directories: made durable with the list, in the same journal
            commit when possible.
        """
        with dovecot_files.uidlist_lock(self.directory):
            current = dovecot_files.read_uidlist(self.directory, self.uidlist)
            fresh = []
            if current is None:
                current = UidList(dovecot_files.next_uidvalidity(self.user_root), 1,
                                  uuid.uuid4().hex)
                for base in dict.fromkeys(bases):
                    current.add(UidRecord(current.next_uid, base))
                dovecot_files.write_uidlist(self.directory, current)
            else:
                for base in dict.fromkeys(b for b in bases if b not in current.uid_of):
                    fresh.append(UidRecord(current.next_uid + len(fresh), base))
            if fresh:
                dovecot_files.append_records(self.directory, current, fresh, directories)
            else:
                for directory in directories:
                    fsync_directory(directory)
        self.uidlist = current
        return current.uid_of

    def compact_if_needed(self) -> None:
        """
        Rewrite the UID list without the records of expunged messages once
        fewer than 75% of them are live, Dovecot's own threshold
        (UIDLIST_COMPRESS_PERCENTAGE): the list must not grow forever.
        """
        if self.uidlist is None or len(self.uidlist.records) < COMPACT_MIN_RECORDS:
            return
        if len(self.messages) >= 0.75 * len(self.uidlist.records):
            return
        with dovecot_files.uidlist_lock(self.directory):
            current = dovecot_files.read_uidlist(self.directory, self.uidlist)
            if current is None:
                return
            on_disk = self._scan()
            current.records = [r for r in current.records if r.base in on_disk]
            current.uid_of = {r.base: r.uid for r in current.records}
            dovecot_files.write_uidlist(self.directory, current)
        self.uidlist = current

    # -- describing -------------------------------------------------------

    def flags_of(self, message: _Message) -> frozenset[str]:
        """
        The flags a message's letters stand for (a folder has few distinct
        letter strings, so each set is made once).
        """
        flags = self._flags_by_letters.get(message.letters)
        if flags is None:
            found = set()
            for letter in message.letters:
                if letter in _LETTER_FLAGS:
                    found.add(_LETTER_FLAGS[letter])
                elif letter.islower():
                    index = self._letter_index(letter)
                    if index is not None:
                        found.add(self.keywords[index])
            flags = self._flags_by_letters[message.letters] = frozenset(found)
        return flags

    @property
    def keywords(self) -> list[str | None]:
        return self._keywords

    @keywords.setter
    def keywords(self, keywords: list[str | None]) -> None:
        self._keywords = keywords
        self._flags_by_letters: dict[str, frozenset[str]] = {}

    def info(self, uid: int) -> MessageInfo:
        message = self.messages[uid]
        return MessageInfo(uid, message.entry.vsize, message.entry.mtime,
                           self.flags_of(message), message.entry.modseq)

    @property
    def uidvalidity(self) -> int:
        return self.uidlist.uidvalidity if self.uidlist else 0

    @property
    def uidnext(self) -> int:
        return self.uidlist.next_uid if self.uidlist else 1

    def path_of(self, uid: int) -> str:
        # A string: this runs for every message a FETCH reads, and building
        # a Path cost more than opening the file.
        message = self.messages[uid]
        return f"{self._directory_text}/{message.subdir}/{message.filename}"

    # -- changing ---------------------------------------------------------

    def letters_for(self, flags: Iterable[str], keep: str = "") -> str:
        """
        The info letters for a flag set; letters we do not map (P, and
        unknown ones) in C{keep} are preserved.
        """
        letters = {c for c in keep if c.isupper() and c not in _LETTER_FLAGS}
        for flag in flags:
            if flag in _FLAG_LETTERS:
                letters.add(_FLAG_LETTERS[flag])
            elif not flag.startswith("\\"):
                letters.add(self._keyword_letter(flag))
        return "".join(sorted(letters))

    def _keyword_letter(self, keyword: str) -> str:
        for index, name in enumerate(self.keywords):
            if name == keyword:
                return KEYWORD_LETTERS[index]
        # Dovecot changes the keywords file only under the uidlist lock.
        with dovecot_files.uidlist_lock(self.directory):
            self.keywords = dovecot_files.read_keywords(self.directory)
            if keyword in self.keywords:
                return KEYWORD_LETTERS[self.keywords.index(keyword)]
            free = [i for i, name in enumerate(self.keywords) if name is None]
            index = free[0] if free else len(self.keywords)
            if index >= len(KEYWORD_LETTERS):
                raise TooManyKeywords(f"{self.name} already uses {len(KEYWORD_LETTERS)} "
                                      "keywords")
            keywords = self.keywords + [None] * (index + 1 - len(self.keywords))
            keywords[index] = keyword
            dovecot_files.write_keywords(self.directory, keywords)
            self.keywords = keywords
        return KEYWORD_LETTERS[index]

    def rename_flags(self, uid: int, letters: str) -> None:
        message = self.messages[uid]
        old = self.path_of(uid)
        new = self.directory / "cur" / f"{message.base}:2,{letters}"
        os.rename(old, new)
        message.subdir, message.letters = "cur", letters
        self.highest_modseq += 1
        message.entry.modseq = self.highest_modseq

    def close(self) -> None:
        self.index.close()


def _renamed(name: str, old: str, new: str) -> str:
    """
    C{name} after folder C{old} (with its subfolders) became C{new}.
    """
    if name == old or is_inside(old, name):
        return new + name[len(old):]
    return name


def _from_index_or_file(folder: _Folder, uids, stored: Callable, compute: Callable
                        ) -> tuple[dict[int, object], dict[str, object]]:
    """
    What C{stored(wanted, most)} has of each message, or else what
    C{compute(file)} makes of its file: (everything by UID, the computed
    by base name, for the caller to store).  C{wanted} gives the base name
    of each message by UID.  A file gone since the last look is left out:
    the next sync tells.  As few passes over the messages as can be: each
    took a tenth of a SEARCH of 10,000 (bench/imap.py).
    """
    records = folder.messages
    wanted = {uid: records[uid].base for uid in uids if uid in records}
    found = stored(wanted, 2 * len(wanted) > len(records))
    computed = {}
    for uid, base in wanted.items() if len(found) < len(wanted) else ():
        if uid in found:
            continue
        try:
            with open(folder.path_of(uid), "rb") as f:
                found[uid] = computed[base] = compute(f)
        except FileNotFoundError:
            continue
    return found, computed


def _disk_errors(function, *args, **kwargs):
    """
    Run disk work; an I/O error (disk full, permissions, a vanished disk)
    becomes a temporary failure with its reason, logged once.
    """
    try:
        return function(*args, **kwargs)
    except OSError as e:
        log.error("Store I/O error in {function}: {error}", function=function.__name__,
                  error=str(e))
        raise TemporaryStoreError(f"cannot store now: {e.strerror or e}") from None


def _remove_stale_temporaries(tmp: Path) -> None:
    """
    Delete what interrupted writes left in tmp/: files untouched for 36
    hours, the age maildir(5) and Dovecot use, so nothing still being
    written by another program is touched.
    """
    limit = time.time() - TMP_MAX_AGE
    with os.scandir(tmp) as entries:
        for entry in entries:
            try:
                if entry.is_file() and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                elif entry.is_dir() and entry.name.startswith("mailsrv-deleted-"):
                    shutil.rmtree(entry.path, ignore_errors=True)
            except FileNotFoundError:
                pass


def _discard(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _make_maildir(directory: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (directory / sub).mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass
class _Pending:
    """
    A message written and fsync'd in tmp/, waiting to be put in place.
    """

    temporary: Path
    base: str
    letters_flags: tuple[str, ...]
    size: int
    vsize: int
    mtime: float
    deferred: Deferred
    source_uid: int = 0


@implementer(IUserStore)
class MaildirUserStore:
    """
    One user's Maildir.  Folder-level work is serialized per folder; the
    disk work runs through C{run} (a thread pool).
    """

    def __init__(self, store: MaildirStore, address: str, root: Path):
        self.address = address
        self.root = root
        self._store = store
        self._created = threading.Lock()
        self._ready = False
        self._folders: dict[str, _Folder] = {}
        self._snapshots: dict[str, tuple] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._tree_lock = DeferredLock()
        self._listeners: dict[str, list] = {}
        self._pending: dict[str, list[_Pending]] = {}
        self._commit_waiting: set[str] = set()
        self._resyncs: dict[str, object] = {}
        self._checkpoints: dict[str, object] = {}
        self._snapshot_waiters: dict[str, list[Deferred]] = {}
        self._closed = False
        self._stopping = False

    # -- plumbing ---------------------------------------------------------

    def _name(self, name: str) -> str:
        return normalize_folder_name(name)

    def _run(self, function, *args, **kwargs) -> Deferred:
        return self._store.run(_disk_errors, function, *args, **kwargs)

    def _lock(self, name: str) -> DeferredLock:
        return self._locks.setdefault(name, DeferredLock())

    def _require_folder(self, name: str) -> None:
        """
        Raise L{NoSuchFolder} unless the folder exists (a stat, not a sync);
        make the user's store if it is new.
        """
        self._ensure_user()
        if name != INBOX and not (folder_directory(self.root, name) / "cur").is_dir():
            raise NoSuchFolder(f"no folder named {name}")

    def _folder(self, name: str) -> _Folder:
        """
        The loaded folder (in a pool thread, under its lock).
        """
        folder = self._folders.get(name)
        if folder is None:
            self._require_folder(name)
            folder = _Folder(name, folder_directory(self.root, name), self.root,
                             self._store.open_indexes)
            self._folders[name] = folder
        return folder

    def _ensure_user(self) -> None:
        """
        Make a new user's Maildir with its special-use folders, or clear an
        existing one's tmp/ of what a crash left; once per process.
        """
        with self._created:
            if self._ready:
                return
            if (self.root / "cur").is_dir():
                _remove_stale_temporaries(self.root / "tmp")
            else:
                self._create_user()
            self._ready = True

    def _create_user(self) -> None:
        _make_maildir(self.root)
        uses = {}
        for name, use in DEFAULT_FOLDERS:
            _make_maildir(folder_directory(self.root, name))
            (folder_directory(self.root, name) / "maildirfolder").touch()
            uses[name] = use
        self._write_special_uses(uses)
        self._write_subscriptions([name for name, _ in DEFAULT_FOLDERS])
        fsync_directory(self.root)

    async def _with_folder(self, name: str, work: Callable, *args,
                           locked: Callable | None = None):
        """
        Run C{work(folder, *args)} in the pool under the folder's lock, after
        picking up outside changes; tell listeners what changed.  C{locked}
        is called (in the reactor) once the lock is held.
        """
        async with self._lock(name):
            if self._closed:
                # Waited for the lock while the server stopped: its threads
                # are gone.
                raise TemporaryStoreError("The mail store is shutting down")
            if locked is not None:
                locked()
            result, events = await self._run(self._synced_work, name, work, args)
        self._notify(events)
        self._checkpoint_soon(name)
        return result

    def _synced_work(self, name, work, args, full_sync=True):
        folder = self._folder(name)
        with folder.index.in_use:
            if full_sync or not folder.synced:
                added, expunged, changed = folder.sync()
                events = self._events(folder, added, expunged, changed)
            else:
                events = []
            result = work(folder, *args) if work else None
        return result, events

    def _checkpoint_soon(self, name: str) -> None:
        """
        Checkpoint the folder's index once it has had no writes for
        L{CHECKPOINT_DELAY} (at once without a reactor to wait with).
        """
        folder = self._folders.get(name)
        if folder is None or not folder.index.unchecked or self._stopping:
            return
        pending = self._checkpoints.get(name)
        if self._store.reactor is None:
            self._checkpoint(name)
        elif pending is not None and pending.active():
            pending.reset(CHECKPOINT_DELAY)
        else:
            self._checkpoints[name] = self._store.reactor.callLater(
                CHECKPOINT_DELAY, self._checkpoint, name)

    def _checkpoint(self, name: str) -> None:
        self._checkpoints.pop(name, None)
        folder = self._folders.get(name)
        if folder is None:
            return  # closed: closing checkpointed it
        # Not under the folder's lock (see FolderIndex.checkpoint_aside).
        # The index is a cache: a failed checkpoint is tried again after the
        # next write, or by SQLite when the index closes.
        self._run(folder.index.checkpoint_aside).addErrback(
            lambda f: log.failure("Checkpoint of {folder}'s index failed", f, folder=name))

    def _events(self, folder: _Folder, added, expunged, changed) -> list:
        events = []
        if expunged:
            events.append(MessagesExpunged(folder.name, tuple(expunged)))
        if added:
            events.append(MessagesAdded(folder.name, tuple(added)))
        if changed:
            events.append(FlagsChanged(folder.name, tuple(folder.info(u) for u in changed)))
        return events

    def _notify(self, events: list) -> None:
        for event in events:
            for listener in list(self._listeners.get(event.folder, ())):
                try:
                    listener.folder_changed(event)
                except Exception:
                    log.failure("Folder listener failed on {event}", event=event)

    def _call(self, coroutine) -> Deferred:
        return Deferred.fromCoroutine(coroutine)

    # -- listeners --------------------------------------------------------

    def add_listener(self, name, listener) -> None:
        """
        Tell C{listener} of changes to a folder.  While a folder has
        listeners, its new/ and cur/ are watched (inotify, where the store
        has a reactor and the system has it), so that changes made by other
        programs are told at once, not at the next command.
        """
        name = self._name(name)
        listeners = self._listeners.setdefault(name, [])
        if not listeners:
            directory = folder_directory(self.root, name)
            for subdir in ("new", "cur"):
                self._store.watch(directory / subdir, lambda *_: self._touched(name))
        listeners.append(listener)

    def remove_listener(self, name, listener) -> None:
        name = self._name(name)
        listeners = self._listeners.get(name, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(name, None)
            directory = folder_directory(self.root, name)
            for subdir in ("new", "cur"):
                self._store.unwatch(directory / subdir)
            pending = self._resyncs.pop(name, None)
            if pending is not None and pending.active():
                pending.cancel()

    def _touched(self, name: str) -> None:
        """
        Something changed in a watched folder: look soon, once for a burst
        (at once without a reactor to wait with).
        """
        if self._stopping:
            return
        if self._store.reactor is None:
            self._resync(name)
        elif name not in self._resyncs or not self._resyncs[name].active():
            self._resyncs[name] = self._store.reactor.callLater(RESYNC_DELAY, self._resync,
                                                                name)

    def _resync(self, name: str) -> None:
        self._resyncs.pop(name, None)
        if name in self._listeners:
            self._call(self._with_folder(name, None)).addErrback(self._resync_failed, name)

    def _resync_failed(self, failure, name: str) -> None:
        if failure.check(NoSuchFolder):
            self._notify([FolderDeleted(name)])  # another program removed it
        elif not self._closed:
            log.failure("Resync of {folder} failed", failure, folder=name)

    # -- reading ----------------------------------------------------------

    def snapshot(self, name) -> Deferred:
        """
        Callers that ask while a snapshot of the folder waits for its lock
        share that one: when a delivery wakes hundreds of sessions idling in
        a folder, each asks, and one look at the folder answers them all
        (bench/imap.py: 500 idle sessions heard of a new message only after
        6 s when each synced the folder itself).  A snapshot whose work has
        begun is not shared: it may predate what the caller was told of.
        """
        name = self._name(name)
        answer = Deferred()
        waiting = self._snapshot_waiters.get(name)
        if waiting is not None:
            waiting.append(answer)
            return answer
        waiting = self._snapshot_waiters[name] = [answer]

        def locked():
            if self._snapshot_waiters.get(name) is waiting:
                del self._snapshot_waiters[name]  # later callers start another

        def tell(result):
            locked()
            for each in waiting:
                if isinstance(result, Failure):
                    each.errback(result)
                else:
                    each.callback(result)

        self._call(self._with_folder(name, self._describe, locked=locked)).addBoth(tell)
        return answer

    def _describe(self, folder: _Folder) -> FolderSnapshot:
        """
        The folder's snapshot, the same object while nothing changed: IMAP
        sessions keep it, so sessions of one folder share its messages.
        """
        state = (folder.uidvalidity, folder.uidnext, folder.highest_modseq,
                 len(folder.messages))
        cached = self._snapshots.get(folder.name)
        if cached is not None and cached[0] == state:
            return cached[1]
        snapshot = FolderSnapshot(folder.name, folder.uidvalidity, folder.uidnext,
                                  folder.highest_modseq,
                                  tuple(folder.info(uid) for uid in sorted(folder.messages)),
                                  tuple(k for k in folder.keywords if k))
        self._snapshots[folder.name] = (state, snapshot)
        return snapshot

    def status(self, name) -> Deferred:
        return self._call(self._with_folder(self._name(name), self._status))

    def _status(self, folder: _Folder) -> FolderStatus:
        infos = [folder.info(uid) for uid in folder.messages]
        return FolderStatus(folder.name, folder.uidvalidity, folder.uidnext,
                            folder.highest_modseq, len(infos),
                            sum(1 for i in infos if "\\Seen" not in i.flags),
                            sum(i.size for i in infos))

    def open_message(self, name, uid) -> Deferred:
        def opening(folder: _Folder):
            if uid not in folder.messages:
                raise KeyError(uid)
            return open(folder.path_of(uid), "rb")
        return self._call(self._with_folder(self._name(name), opening))

    def read_messages(self, name, uids) -> Deferred:
        return self._call(self._with_folder(self._name(name), self._read_messages,
                                            tuple(uids)))

    def _read_messages(self, folder: _Folder, uids) -> dict[int, bytes]:
        contents = {}
        for uid in uids:
            message = folder.messages.get(uid)
            if message is not None:
                try:
                    with open(folder.path_of(uid), "rb") as f:
                        content = f.read()
                except FileNotFoundError:
                    continue
                # A file whose CRLF size is its size has no bare LF: no
                # need to look (two passes over every message otherwise).
                entry = message.entry
                contents[uid] = content if entry.size == entry.vsize == len(content) \
                    else to_crlf(content)
        return contents

    def headers(self, name, uids) -> Deferred:
        return self._call(self._with_folder(self._name(name), self._headers, tuple(uids)))

    def _headers(self, folder: _Folder, uids) -> dict[int, bytes]:
        found, computed = _from_index_or_file(folder, uids, folder.index.headers,
                                              summary.read_header)
        if computed:
            folder.index.set_headers(computed)
        return found

    def outlines(self, name, uids) -> Deferred:
        return self._call(self._with_folder(self._name(name), self._outlines, tuple(uids)))

    def _outlines(self, folder: _Folder, uids) -> dict[int, PartOutline]:
        def stored(wanted, most):
            return {uid: summary.loads(text)
                    for uid, text in folder.index.outlines(wanted, most).items()}

        found, computed = _from_index_or_file(folder, uids, stored,
                                              lambda f: summary.outline(f.read()))
        if computed:
            folder.index.set_outlines({base: (outline.header, summary.dumps(outline))
                                       for base, outline in computed.items()})
        return found

    # -- appending --------------------------------------------------------

    def append(self, name, message, flags=(), internal_date=None) -> Deferred:
        return self._call(self._append(self._name(name), message, tuple(flags), internal_date))

    async def _append(self, name, message, flags, internal_date) -> AppendResult:
        quota = await self._quota()
        pending = await self._run(self._write_temporary, name, message, flags, internal_date,
                                  quota)
        self._queue_commit(name, [pending])
        return await pending.deferred

    def deliver(self, name, message) -> Deferred:
        """
        Deliver C{message} into a folder the way any MDA does: fires with
        None once it is durable in new/, where the folder's next sync gives
        it a UID, as it does mail dropped in by other programs.  A sender
        waiting for its 250 has no use for the UID, and need not wait for
        the UID list's lock and fsync.
        """
        return self._call(self._deliver(self._name(name), message))

    async def _deliver(self, name, message) -> None:
        quota = await self._quota()
        await self._store.deliveries.deliver(folder_directory(self.root, name) / "new",
                                             self._write_delivery, name, message, quota)
        if name in self._listeners:
            self._touched(name)

    async def _quota(self) -> tuple[int, int] | None:
        """
        The user's quota and the bytes used, or None without a quota.
        """
        limit = self._store.quota_for(self.address)
        return None if limit is None else (limit, await self._usage())

    def _write_temporary(self, name, message, flags, internal_date, quota) -> _Pending:
        """
        Write the message into tmp/ and fsync it (outside any lock), once
        its folder is known to exist; refuse it if it passes the quota.
        """
        self._require_folder(name)
        base = _unique_name()
        temporary = self.root / "tmp" / base
        size = vsize = 0
        previous = b""
        chunks = [message] if isinstance(message, bytes) else iter(
            lambda: message.read(_CHUNK), b"")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    size += len(chunk)
                    vsize += len(chunk) + chunk.count(b"\n") - chunk.count(b"\r\n")
                    if previous == b"\r" and chunk.startswith(b"\n"):
                        vsize -= 1
                    previous = chunk[-1:]
                if quota is not None and quota[1] + vsize > quota[0]:
                    raise OverQuota(f"{self.address} is over quota ({quota[1]} of {quota[0]} "
                                    "bytes used)")
                if internal_date is not None:
                    os.utime(fd, (internal_date, internal_date))
                os.fsync(fd)
                mtime = os.fstat(fd).st_mtime
            finally:
                os.close(fd)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return _Pending(temporary, f"{base},S={size},W={vsize}", flags, size, vsize, mtime,
                        Deferred())

    def _write_delivery(self, name, message, quota) -> tuple[Path, str]:
        """
        Write a delivery into tmp/ (see L{DeliveryBatches}): its file there
        and its name in new/.
        """
        pending = self._write_temporary(name, message, (), None, quota)
        return pending.temporary, pending.base

    async def _usage(self) -> int:
        total = 0
        for info in await self.list_folders():
            if info.selectable:
                total += (await self.status(info.name)).size
        return total

    def _queue_commit(self, name: str, pending: list[_Pending]) -> None:
        """
        Queue written messages to be put in place; one commit at most waits
        for the folder's lock, and takes everything queued by then.
        """
        self._pending.setdefault(name, []).extend(pending)
        if name not in self._commit_waiting:
            self._commit_waiting.add(name)
            self._call(self._commit_pending(name))

    async def _commit_pending(self, name) -> None:
        """
        Put every message waiting for C{name} in place at once: one
        directory fsync and one UID list write for the batch.
        """
        async with self._lock(name):
            self._commit_waiting.discard(name)
            batch = self._pending.pop(name, [])
            if not batch:
                return
            try:
                # Placing new files needs no look at the others: the UID list
                # is re-read under its lock, and outside changes are picked
                # up by the next command.
                result, events = await self._store.run_commit(
                    _disk_errors, self._synced_work, name, self._place, (batch,), False)
            except Exception:
                failure = Failure()
                await self._run(_discard, [p.temporary for p in batch])
                for pending in batch:
                    pending.deferred.errback(failure)
                return
        # Listeners first: by the time the caller hears of its UID, every
        # session has been told the message exists.
        self._notify([*events, MessagesAdded(name, tuple(result[1]))])
        self._checkpoint_soon(name)
        for pending, uid in zip(batch, result[1], strict=True):
            pending.deferred.callback(AppendResult(result[0], uid))

    def _place(self, folder: _Folder, batch: list[_Pending]) -> tuple[int, list[int]]:
        """
        Move written messages into the folder and give them their UIDs, in
        one journal commit.

        @return: the UIDVALIDITY and each message's UID.
        """
        placed = {}
        moved = set()
        for pending in batch:
            letters = folder.letters_for(pending.letters_flags)
            subdir = "cur" if letters else "new"
            filename = f"{pending.base}:2,{letters}" if letters else pending.base
            os.rename(pending.temporary, folder.directory / subdir / filename)
            placed[pending.base] = (subdir, letters)
            moved.add(folder.directory / subdir)
        # The renames and the new UID list records become durable in one
        # journal commit, before anyone hears of the messages.
        listed = folder._assign_uids(list(placed), moved)
        uids = []
        updates = []
        for pending in batch:
            uid = listed[pending.base]
            subdir, letters = placed[pending.base]
            folder.highest_modseq += 1
            entry = IndexEntry(pending.size, pending.vsize, pending.mtime, folder.highest_modseq)
            folder.cached[pending.base] = entry
            folder.messages[uid] = _Message(pending.base, subdir, letters, entry)
            updates.append((pending.base, entry))
            uids.append(uid)
        folder.index.update(updates, (), folder.highest_modseq)
        return folder.uidvalidity, uids

    # -- flags, expunge, copy, move -----------------------------------------

    def set_flags(self, name, uids, flags, mode) -> Deferred:
        if mode not in ("set", "add", "remove"):
            raise ValueError(mode)
        return self._call(self._set_flags(self._name(name), tuple(uids), frozenset(flags),
                                          mode))

    async def _set_flags(self, name, uids, flags, mode):
        changed = await self._with_folder(name, self._change_flags, uids, flags, mode)
        if changed:
            self._notify([FlagsChanged(name, tuple(changed))])
        return changed

    def _change_flags(self, folder: _Folder, uids, flags, mode) -> list[MessageInfo]:
        changed = []
        for uid in sorted(set(uids)):
            if uid not in folder.messages:
                continue
            current = folder.flags_of(folder.messages[uid])
            wanted = {"set": flags, "add": current | flags, "remove": current - flags}[mode]
            letters = folder.letters_for(wanted, folder.messages[uid].letters)
            if letters != folder.messages[uid].letters:
                folder.rename_flags(uid, letters)
                changed.append(folder.info(uid))
        if changed:
            fsync_directory(folder.directory / "cur")
            folder.index.update([(folder.messages[i.uid].base, folder.messages[i.uid].entry)
                                 for i in changed], (), folder.highest_modseq)
        return changed

    def expunge(self, name, uids=None) -> Deferred:
        return self._call(self._expunge(self._name(name), None if uids is None else set(uids)))

    def remove(self, name, uids) -> Deferred:
        return self._call(self._expunge(self._name(name), set(uids), only_deleted=False))

    async def _expunge(self, name, uids, only_deleted=True):
        expunged = await self._with_folder(name, self._remove_deleted, uids, only_deleted)
        if expunged:
            self._notify([MessagesExpunged(name, tuple(expunged))])
        return expunged

    def _remove_deleted(self, folder: _Folder, uids, only_deleted) -> list[int]:
        doomed = [uid for uid in sorted(folder.messages)
                  if (uids is None or uid in uids)
                  and (not only_deleted or "\\Deleted" in folder.flags_of(folder.messages[uid]))]
        removed = []
        subdirs = set()
        for uid in doomed:
            Path(folder.path_of(uid)).unlink(missing_ok=True)
            message = folder.messages.pop(uid)
            removed.append(message.base)
            subdirs.add(message.subdir)
        for subdir in subdirs:
            fsync_directory(folder.directory / subdir)
        for base in removed:
            folder.cached.pop(base, None)
        if removed:
            folder.index.update((), removed, folder.highest_modseq)
            folder.compact_if_needed()
        return doomed

    def copy(self, name, uids, destination) -> Deferred:
        return self._call(self._copy(self._name(name), tuple(uids), self._name(destination),
                                     False))

    def move(self, name, uids, destination) -> Deferred:
        return self._call(self._copy(self._name(name), tuple(uids), self._name(destination),
                                     True))

    async def _copy(self, name, uids, destination, move) -> CopyResult:
        """
        Hard-link the messages into the destination as new appends (no data
        is copied), then for MOVE remove the originals (RFC 6851 3.3: a move
        within one folder gives the messages new UIDs, as a COPY there does).
        """
        if destination != name:
            await self._run(self._require_folder, destination)  # before linking anything
        sources = await self._with_folder(name, self._link_out, uids)
        if not sources:
            return CopyResult(await self._uidvalidity_of(destination), ())
        self._queue_commit(destination, sources)
        results = [await pending.deferred for pending in sources]
        if move:
            await self._expunge(name, {p.source_uid for p in sources}, only_deleted=False)
        return CopyResult(results[0].uidvalidity,
                          tuple((p.source_uid, r.uid) for p, r in zip(sources, results,
                                                                      strict=True)))

    async def _uidvalidity_of(self, name) -> int:
        return (await self.status(name)).uidvalidity

    def _link_out(self, folder: _Folder, uids) -> list[_Pending]:
        """
        Hard-link the source messages into the user's tmp/ (no data copied).
        """
        sources = []
        try:
            for uid in sorted(set(uids)):
                if uid not in folder.messages:
                    continue
                message = folder.messages[uid]
                base = _unique_name()
                size = _size_from_base(message.base)[0] or os.stat(folder.path_of(uid)).st_size
                temporary = self.root / "tmp" / base
                os.link(folder.path_of(uid), temporary)
                sources.append(_Pending(
                    temporary, f"{base},S={size},W={message.entry.vsize}",
                    tuple(folder.flags_of(message)), size, message.entry.vsize,
                    message.entry.mtime, Deferred(), uid))
        except BaseException:
            _discard(p.temporary for p in sources)
            raise
        return sources

    # -- folders ------------------------------------------------------------

    def list_folders(self) -> Deferred:
        return self._run(self._list_folders)

    def _list_folders(self) -> list[FolderInfo]:
        self._ensure_user()
        names = {INBOX}
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.is_dir():
                    continue
                name = folder_name_from_directory(entry.name)
                if name is not None and (self.root / entry.name / "cur").is_dir():
                    names.add(name)
        implied = set()
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts)):
                implied.add(".".join(parts[:i]))
        uses = self._special_uses()
        if uses is None:
            uses = {n: _USE_BY_NAME[n.lower()] for n in names if n.lower() in _USE_BY_NAME}
        every = names | implied
        return [FolderInfo(name, uses.get(name) if name in names else None,
                           any(other.startswith(name + ".") for other in every), name in names)
                for name in sorted(every, key=lambda n: (n != INBOX, n))]

    def create_folder(self, name, special_use=None) -> Deferred:
        name = self._name(name)
        return self._call(self._tree(self._create, name, special_use))

    async def _tree(self, work, *args):
        async with self._tree_lock:
            return await self._run(work, *args)

    def _create(self, name, special_use) -> None:
        self._ensure_user()
        directory = folder_directory(self.root, name)
        if name == INBOX or (directory / "cur").is_dir():
            raise FolderExists(f"{name} already exists")
        # RFC 3501 6.3.3: create the superior names that are missing.
        for level in [*parent_names(name), name]:
            level_directory = folder_directory(self.root, level)
            if level != INBOX and not (level_directory / "cur").is_dir():
                _make_maildir(level_directory)
                (level_directory / "maildirfolder").touch()
        fsync_directory(self.root)
        if special_use:
            uses = self._special_uses() or {}
            uses[name] = special_use
            self._write_special_uses(uses)

    def delete_folder(self, name) -> Deferred:
        name = self._name(name)
        if name == INBOX:
            return self._call(self._raise(StoreError("INBOX cannot be deleted")))
        return self._call(self._delete(name))

    async def _raise(self, error):
        raise error

    async def _delete(self, name):
        async with self._lock(name):
            await self._tree(self._remove_folder, name)
        self._notify([FolderDeleted(name)])  # its subfolders stay (RFC 3501 6.3.4)

    def _remove_folder(self, name) -> None:
        directory = folder_directory(self.root, name)
        if not (directory / "cur").is_dir():
            raise NoSuchFolder(f"no folder named {name}")
        folder = self._folders.pop(name, None)
        self._snapshots.pop(name, None)
        if folder is not None:
            folder.close()
        # Out of sight first (atomic), then removed.
        trash = self.root / "tmp" / f"mailsrv-deleted-{uuid.uuid4().hex}"
        os.rename(directory, trash)
        fsync_directory(self.root)
        shutil.rmtree(trash, ignore_errors=True)
        uses = self._special_uses()
        if uses and uses.pop(name, None):
            self._write_special_uses(uses)

    def rename_folder(self, old, new) -> Deferred:
        old, new = self._name(old), self._name(new)
        return self._call(self._rename(old, new))

    async def _rename(self, old, new):
        if old == INBOX:
            await self.create_folder(new)
            snapshot = await self.snapshot(INBOX)
            await self.move(INBOX, [m.uid for m in snapshot.messages], new)
            return
        affected = {n for n in self._folders if _renamed(n, old, new) != n} | {old}
        locks = [self._lock(n) for n in sorted(affected)]
        for lock in locks:
            await lock.acquire()
        try:
            await self._tree(self._rename_directories, old, new)
        finally:
            for lock in locks:
                lock.release()
        # Sessions in the old names end at once, idling or not.
        self._notify([FolderDeleted(name) for name in list(self._listeners)
                      if _renamed(name, old, new) != name])

    def _rename_directories(self, old, new) -> None:
        source = folder_directory(self.root, old)
        target = folder_directory(self.root, new)
        if new in (INBOX, old) or (target / "cur").is_dir():
            raise FolderExists(f"{new} already exists")
        if is_inside(old, new):
            raise StoreError(f"cannot move {old} inside itself")
        moves = [(source, target)] if (source / "cur").is_dir() else []
        prefix = source.name + "."
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.is_dir():
                    child = folder_name_from_directory(entry.name)
                    if child is not None:
                        moves.append((self.root / entry.name,
                                      folder_directory(self.root, new + child[len(old):])))
        if not moves:
            raise NoSuchFolder(f"no folder named {old}")
        for _, target_directory in moves:
            if target_directory.exists():
                name = folder_name_from_directory(target_directory.name)
                raise FolderExists(f"{name} already exists")
        for name in [n for n in self._folders if _renamed(n, old, new) != n]:
            self._folders.pop(name).close()
            self._snapshots.pop(name, None)
        for source_directory, target_directory in moves:
            os.rename(source_directory, target_directory)
        fsync_directory(self.root)
        uses = self._special_uses()
        if uses:
            self._write_special_uses({_renamed(n, old, new): u for n, u in uses.items()})
        subscribed = self._read_subscriptions()
        if any(_renamed(n, old, new) != n for n in subscribed):
            self._write_subscriptions([_renamed(n, old, new) for n in subscribed])

    # -- subscriptions and special use ----------------------------------------

    def subscriptions(self) -> Deferred:
        return self._run(self._read_subscriptions)

    def subscribe(self, name) -> Deferred:
        name = self._name(name)
        return self._call(self._tree(self._change_subscription, name, True))

    def unsubscribe(self, name) -> Deferred:
        name = self._name(name)
        return self._call(self._tree(self._change_subscription, name, False))

    def _change_subscription(self, name, subscribed: bool) -> None:
        names = self._read_subscriptions()
        if subscribed and name not in names:
            self._write_subscriptions([*names, name])
        elif not subscribed and name in names:
            self._write_subscriptions([n for n in names if n != name])

    def _read_subscriptions(self) -> list[str]:
        return dovecot_files.read_subscriptions(self.root)

    def _write_subscriptions(self, names: list[str]) -> None:
        dovecot_files.write_subscriptions(self.root, names)

    def _special_uses(self) -> dict[str, str] | None:
        """
        Special use by folder name; L{None} for a Maildir we did not create.
        """
        try:
            lines = (self.root / SPECIAL_USE_FILE).read_text("utf-8").splitlines()
        except FileNotFoundError:
            return None
        return dict(line.split("\t", 1)[::-1] for line in lines if "\t" in line)

    def _write_special_uses(self, uses: dict[str, str]) -> None:
        text = "".join(f"{use}\t{name}\n" for name, use in sorted(uses.items()))
        write_atomically(self.root / SPECIAL_USE_FILE, text.encode("utf-8"))

    def stop_timers(self) -> None:
        """
        Schedule no more resyncs and checkpoints, and cancel those pending:
        the server is stopping, and the thread pools they need go first
        (closing checkpoints each index anyway).
        """
        self._stopping = True
        for pending in [*self._resyncs.values(), *self._checkpoints.values()]:
            if pending.active():
                pending.cancel()
        self._resyncs.clear()
        self._checkpoints.clear()

    def close(self) -> None:
        self._closed = True
        self.stop_timers()
        for folder in self._folders.values():
            folder.close()
        self._folders.clear()
        self._snapshots.clear()


@implementer(IMailStore)
class MaildirStore:
    """
    Every user's Maildir under C{root} (C{<data>/mail}).

    @param run: C{run(function, *args) -> Deferred}: how blocking disk work
        is run; a thread pool in the server, a synchronous call in tests.
    @param quotas: address -> bytes allowed, or L{None} for no limit.
    @param reactor: needed to watch folders for changes made by other
        programs; without it they are seen at the next operation.
    @param run_commit: like C{run}, for putting written messages in place; a
        pool of its own keeps commits from queueing behind the writes of
        other messages (each commit waits on fsyncs, and its batch's senders
        wait on it).
    """

    def __init__(self, root: Path, run: Callable[..., Deferred],
                 quotas: Callable[[str], int | None] = lambda address: None,
                 reactor=None, run_commit: Callable[..., Deferred] | None = None):
        self.root = root
        self.run = run
        self.run_commit = run_commit or run
        self.open_indexes = OpenIndexes()
        self.quota_for = quotas
        self.reactor = reactor
        self._users: dict[str, MaildirUserStore] = {}
        self._inotify = None
        self.deliveries = DeliveryBatches(run, _disk_errors, reactor)

    def watch(self, directory: Path, callback) -> None:
        """
        Call C{callback} when entries of C{directory} appear or go.
        """
        if self.reactor is None:
            return
        try:
            if self._inotify is None:
                self._inotify = _INotify(self.reactor)
                self._inotify.startReading()
            self._inotify.watch(FilePath(str(directory)), mask=_WATCH_MASK,
                                callbacks=[callback])
        except (OSError, inotify.INotifyError) as e:
            log.warn("Not watching {directory}: {error}", directory=str(directory),
                     error=str(e))

    def unwatch(self, directory: Path) -> None:
        if self._inotify is not None:
            try:
                self._inotify.ignore(FilePath(str(directory)))
            except KeyError:
                pass  # the directory was removed, and its watch with it

    def user(self, address: str) -> MaildirUserStore:
        store = self._users.get(address)
        if store is None:
            store = MaildirUserStore(self, address, user_directory(self.root, address))
            self._users[address] = store
        return store

    def deliver(self, address: str, message, folder: str = INBOX) -> Deferred:
        return self.user(address).deliver(folder, message)

    def stop_timers(self) -> None:
        """
        See L{MaildirUserStore.stop_timers}: call before the pools stop.
        """
        for store in self._users.values():
            store.stop_timers()

    def close(self) -> None:
        for store in self._users.values():
            store.close()
        self._users.clear()
        if self._inotify is not None:
            self._inotify.stop()
            self._inotify = None

