"""
The mail store seam: every protocol reads and writes mail through
L{IMailStore} and L{IUserStore}, and nothing else knows how mail lies on disk.

Semantics are IMAP's (RFC 3501 2.3): per-folder UIDVALIDITY and UIDNEXT, UIDs
that only grow and are never reused, system flags and keywords, an internal
date and a size per message, plus a modification sequence per message
(RFC 7162) bumped on every flag change.  Everything that may touch the disk
returns a L{Deferred}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from zope.interface import Attribute, Interface

#: IMAP system flags a message can carry (RFC 3501 2.3.2); \\Recent is a
#: session property, not stored.
SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})

#: Special-use attributes (RFC 6154) the store keeps per folder.
SPECIAL_USES = frozenset({"\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive"})

INBOX = "INBOX"


class StoreError(Exception):
    """
    A request the store refuses; C{str()} is a clear reason for the user.
    Protocols answer it with a permanent error (NO / 5xx).
    """


class NoSuchFolder(StoreError):
    pass


class FolderExists(StoreError):
    pass


class OverQuota(StoreError):
    """
    The message would take the user over their quota (IMAP [OVERQUOTA],
    SMTP 552 5.2.2).
    """


class TooManyKeywords(StoreError):
    pass


class TemporaryStoreError(Exception):
    """
    The store could not do it now (disk full, I/O error); nothing was
    changed and trying again later may work (NO / 4xx).
    """


class MessageInfo(NamedTuple):
    """
    One message as a folder lists it.  A named tuple: a snapshot makes one
    per message, and a frozen dataclass cost five times as much to make
    (opening a 10,000-message folder; bench/imap.py).

    @ivar size: the size in octets with CRLF line ends (RFC822.SIZE).
    @ivar internal_date: seconds since the epoch (IMAP INTERNALDATE).
    @ivar flags: system flags and keywords.
    """

    uid: int
    size: int
    internal_date: float
    flags: frozenset[str]
    modseq: int


@dataclass(frozen=True)
class FolderSnapshot:
    """
    A folder's state at one moment: what SELECT needs.  C{messages} are in
    UID order.
    """

    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    messages: tuple[MessageInfo, ...]
    keywords: tuple[str, ...] = ()

    @cached_property
    def uids(self) -> tuple[int, ...]:
        """
        The UIDs in order, computed once for everyone holding this snapshot.
        """
        return tuple(m.uid for m in self.messages)


@dataclass(frozen=True)
class FolderStatus:
    """
    What STATUS asks for, without listing the messages.
    """

    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True)
class FolderInfo:
    """
    One folder as LIST shows it.

    @ivar selectable: False for a name that exists only as the parent of
        other folders (IMAP \\Noselect / \\NonExistent).
    """

    name: str
    special_use: str | None
    has_children: bool
    selectable: bool = True


@dataclass(frozen=True)
class AppendResult:
    """
    Where an appended message went (UIDPLUS APPENDUID, RFC 4315).
    """

    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class CopyResult:
    """
    Source UID -> new UID in the destination (UIDPLUS COPYUID, RFC 4315).
    """

    uidvalidity: int
    uids: tuple[tuple[int, int], ...] = field(default=())


@dataclass(frozen=True)
class MessagesAdded:
    folder: str
    uids: tuple[int, ...]


@dataclass(frozen=True)
class FlagsChanged:
    folder: str
    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True)
class MessagesExpunged:
    folder: str
    uids: tuple[int, ...]


@dataclass(frozen=True)
class FolderDeleted:
    """
    The folder is gone (deleted or renamed, here or by another program).
    """

    folder: str


class IFolderListener(Interface):
    """
    Told of every change to a folder, whoever made it: a delivery, another
    session, another process.
    """

    def folder_changed(event):
        """
        @param event: L{MessagesAdded}, L{FlagsChanged}, L{MessagesExpunged}
            or L{FolderDeleted}.
        """


class IUserStore(Interface):
    """
    One user's folders and messages.  Folder names are Unicode with "."
    as the hierarchy separator; "INBOX" always exists.
    """

    address = Attribute("The user's address (L{str}).")

    def list_folders():
        """
        @return: L{Deferred} of a list of L{FolderInfo}, INBOX first.
        """

    def create_folder(name, special_use=None):
        """
        Create a folder (and, implicitly, its missing parents).

        @raise FolderExists: (in the Deferred) if it exists.
        """

    def delete_folder(name):
        """
        Delete a folder and its messages; its subfolders stay.
        """

    def rename_folder(old, new):
        """
        Rename a folder with its subfolders, keeping UIDVALIDITY and UIDs.
        Renaming INBOX moves its messages into a new folder (RFC 3501 6.3.5).
        """

    def subscriptions():
        """
        @return: L{Deferred} of the list of subscribed names.
        """

    def subscribe(name):
        pass

    def unsubscribe(name):
        pass

    def status(name):
        """
        @return: L{Deferred} of L{FolderStatus}.
        """

    def snapshot(name):
        """
        Pick up outside changes, then describe the folder.

        @return: L{Deferred} of L{FolderSnapshot}.
        """

    def open_message(name, uid):
        """
        @return: L{Deferred} of a binary file object positioned at the
            start of the message; the caller reads it in chunks and closes it.
        @raise KeyError: (in the Deferred) if the UID is not in the folder.
        """

    def read_messages(name, uids):
        """
        Several messages at once, whole, with CRLF line ends (RFC 3501
        2.3.4), in one trip to the disk: what a FETCH of bodies needs.

        @return: L{Deferred} of C{{uid: bytes}} for the UIDs that exist.
        """

    def headers(name, uids):
        """
        The top-level header block of each message, with CRLF line ends, up
        to and including its blank line: from the index when known, else
        read from the start of the file only.  What ENVELOPE, header
        sections and SEARCH by header need.

        @return: L{Deferred} of C{{uid: bytes}} for the UIDs that exist.
        """

    def outlines(name, uids):
        """
        The MIME outline of each message (L{mailsrv.store.summary.PartOutline}:
        raw headers, part offsets and sizes), from the index when known.

        @return: L{Deferred} of C{{uid: PartOutline}} for the UIDs that exist.
        """

    def append(name, message, flags=(), internal_date=None):
        """
        Store a message durably, then report where it went.

        @param message: L{bytes} or a binary file object.
        @return: L{Deferred} of L{AppendResult}.
        """

    def set_flags(name, uids, flags, mode):
        """
        Change flags; mode is "set", "add" or "remove".  UIDs not in the
        folder are ignored.

        @return: L{Deferred} of the L{MessageInfo}s that changed, with
            their new flags and modseq.
        """

    def expunge(name, uids=None):
        """
        Remove the messages flagged \\Deleted (only among C{uids} if given).

        @return: L{Deferred} of the expunged UIDs, ascending.
        """

    def remove(name, uids):
        """
        Remove these messages, whatever their flags, in one step that other
        sessions see whole (POP3's UPDATE state, RFC 1939 6).

        @return: L{Deferred} of the removed UIDs, ascending (those still
            there).
        """

    def copy(name, uids, destination):
        """
        @return: L{Deferred} of L{CopyResult}.
        """

    def move(name, uids, destination):
        """
        Copy, then expunge the originals (RFC 6851).

        @return: L{Deferred} of L{CopyResult}.
        """

    def add_listener(name, listener):
        """
        Tell C{listener} (an L{IFolderListener}) of changes to folder C{name}.
        """

    def remove_listener(name, listener):
        pass


class IMailStore(Interface):
    """
    The whole store: every user's folders.
    """

    def user(address):
        """
        The store of one user; no disk access until it is used.

        @rtype: L{IUserStore}
        """

    def stop_timers():
        """
        Schedule no more background work (resyncs, checkpoints): called
        when the server starts stopping, before its thread pools go.
        """

    def close():
        """
        Release what the store holds open (files, watches); called when the
        server stops.
        """

    def deliver(address, message, folder=INBOX):
        """
        Deliver a message (SMTP); the user's store is created if needed.

        The message gets its UID soon after, as mail dropped in by another
        program would; who needs the UID at once appends instead.

        @return: L{Deferred} fired with None once the message is durable.
        """
