"""
What each IMAP command does (RFC 3501 6), and this session's view of the
selected folder.

The view keeps the sequence numbers the client knows (RFC 3501 2.3.1.2).
Changes made elsewhere (a delivery, another session, another program)
only mark it stale; it is brought up to date with a fresh snapshot at the
points where RFC 3501 7.4.1 lets the server renumber: after any command
except FETCH, STORE and SEARCH by sequence number, and at once while the
client idles (RFC 2177).
"""

from __future__ import annotations

import base64
import bisect
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredLock
from zope.interface import implementer

from mailsrv import __version__
from mailsrv.cred.credentials import PeerUsernamePassword, plain_response
from mailsrv.cred.realm import IMailAccount
from mailsrv.imap import encoding
from mailsrv.imap.parser import Command, FetchItem, SequenceSet
from mailsrv.imap.search import (
    Candidate,
    body_text,
    matches,
    narrow,
    needs_body,
    needs_header,
)
from mailsrv.logs import get_logger
from mailsrv.store.interfaces import (
    INBOX,
    FolderExists,
    FolderSnapshot,
    IFolderListener,
    MessageInfo,
    NoSuchFolder,
    OverQuota,
    StoreError,
    TemporaryStoreError,
)

log = get_logger(__name__)

#: Capabilities once logged in (RFC 3501 7.2.1 and the extensions' RFCs).
CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                "UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE", "CHILDREN")

#: Messages fetched per round trip to the store.
FETCH_BATCH = 256

_SEEN = "\\Seen"


class No(Exception):
    """
    End the command with NO (and an optional response code); with C{bye},
    end the session too, after the NO (RFC 3501 7.1.5).
    """

    def __init__(self, text: str, code: str | None = None, bye: str | None = None):
        super().__init__(text)
        self.code = code
        self.bye = bye


class Bad(Exception):
    """
    End the command with BAD: not allowed now, or nonsense in this state.
    """


def _store_errors(error: Exception) -> No:
    """
    What a store error tells the client (RFC 5530 response codes).
    """
    if isinstance(error, OverQuota):
        return No(str(error), "OVERQUOTA")
    if isinstance(error, NoSuchFolder):
        return No(str(error), "NONEXISTENT")
    if isinstance(error, FolderExists):
        return No(str(error), "ALREADYEXISTS")
    if isinstance(error, TemporaryStoreError):
        return No(f"{error} (try again later)", "UNAVAILABLE")
    return No(str(error), "CANNOT")


@implementer(IFolderListener)
class FolderView:
    """
    The selected folder as this session's client knows it: the store's
    snapshot (shared by every session that saw the same state, so an idle
    session costs little more than its socket) and this session's own flag
    changes since.
    """

    def __init__(self, snapshot: FolderSnapshot, read_only: bool, recent: set[int],
                 on_change):
        self.name = snapshot.name
        self.read_only = read_only
        self.uidvalidity = snapshot.uidvalidity
        self.rebase(snapshot)
        self.recent = recent
        #: Changes were made elsewhere that the client has not been told.
        self.stale = False
        self._on_change = on_change

    def rebase(self, snapshot: FolderSnapshot) -> None:
        """
        The client now knows the folder as C{snapshot} describes it.
        """
        self.snapshot = snapshot
        self.uidnext = snapshot.uidnext
        self.uids = snapshot.uids
        self._messages = snapshot.messages
        self._changed: dict[int, MessageInfo] = {}

    def folder_changed(self, event):
        self.stale = True
        self._on_change()

    def seq(self, uid: int) -> int:
        return bisect.bisect_left(self.uids, uid) + 1

    def message(self, uid: int) -> MessageInfo | None:
        changed = self._changed.get(uid)
        if changed is not None:
            return changed
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return self._messages[index]
        return None

    def messages(self) -> list[MessageInfo]:
        """
        Every message in sequence order, this session's changes included.
        """
        if not self._changed:
            return list(self._messages)
        return [self._changed.get(info.uid, info) for info in self._messages]

    def own_changes(self) -> dict[int, MessageInfo]:
        """
        The messages whose flags this session changed since the snapshot.
        """
        return self._changed

    def update(self, info: MessageInfo) -> None:
        """
        This session changed a message's flags.
        """
        if self.message(info.uid) is not None:
            self._changed[info.uid] = info

    def select(self, sequence_set: SequenceSet, by_uid: bool) -> list[int]:
        """
        The UIDs a set names, ascending; by sequence number or by UID.
        """
        chosen = []
        if by_uid:
            largest = self.uids[-1] if self.uids else 0
            for low, high in sequence_set.resolve(largest):
                start = bisect.bisect_left(self.uids, low)
                end = bisect.bisect_right(self.uids, high)
                chosen.extend(self.uids[start:end])
            # RFC 3501 6.4.8: "*" means the highest UID even if beyond.
        else:
            for low, high in sequence_set.resolve(len(self.uids)):
                if high > len(self.uids):
                    raise Bad(f"No message {high}: the folder has {len(self.uids)}")
                chosen.extend(self.uids[low - 1:high])
        return sorted(set(chosen))

    def flags(self, uid: int) -> frozenset[str]:
        flags = self.message(uid).flags
        return flags | {"\\Recent"} if uid in self.recent else flags


class _Changes(NamedTuple):
    expunged: list[int]
    added: list[int]
    changed: list[tuple[int, MessageInfo]]  # (sequence number in the newer, message)


#: Recent differences between two snapshots of a folder: every session
#: idling in it compares the same two, and comparing 10,000 messages once
#: per session kept the last of 500 idling sessions waiting for seconds.
_CHANGES: OrderedDict[tuple[int, int], tuple[FolderSnapshot, FolderSnapshot, _Changes]] = \
    OrderedDict()
_CHANGES_KEPT = 16


def _changes(old: FolderSnapshot, new: FolderSnapshot) -> _Changes:
    """
    What changed from C{old} to C{new}, computed once for every session.
    """
    key = (id(old), id(new))
    found = _CHANGES.get(key)
    if found is not None and found[0] is old and found[1] is new:
        return found[2]
    current = set(new.uids)
    old_flags = {m.uid: m.flags for m in old.messages}
    changes = _Changes(
        [uid for uid in old.uids if uid not in current],
        [uid for uid in new.uids if uid not in old_flags],
        [(seq, m) for seq, m in enumerate(new.messages, 1)
         if m.uid in old_flags and old_flags[m.uid] != m.flags])
    _CHANGES[key] = (old, new, changes)
    if len(_CHANGES) > _CHANGES_KEPT:
        _CHANGES.popitem(last=False)
    return changes


def _uid_set(uids) -> str:
    """
    A compact UID set (RFC 4315 uid-set): 3:5,9.
    """
    ranges = []
    for uid in uids:
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)


class Session:
    """
    One client's state: not authenticated, authenticated, selected, logout
    (RFC 3501 3).
    """

    def __init__(self, protocol, factory):
        self._protocol = protocol
        self._factory = factory
        self.account = None
        self.view: FolderView | None = None
        self._errors = 0
        self._auth_failures = 0
        self._idling = False
        self._refreshing = DeferredLock()

    # Plumbing

    def write(self, text: str | bytes) -> None:
        self._protocol.write(text if isinstance(text, bytes) else text.encode("utf-8"))

    def untagged(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        self._protocol.write(b"* " + data + b"\r\n")

    @property
    def _settings(self):
        return self._factory.settings

    def _plaintext_ok(self) -> bool:
        return self._protocol.tls or self._settings.auth.allow_plaintext

    def capabilities(self) -> list[str]:
        if self.account is not None:
            return list(CAPABILITIES)
        offered = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if not self._protocol.tls and self._factory.tls is not None:
            offered.append("STARTTLS")
        if self._plaintext_ok():
            offered.append("AUTH=PLAIN")
        else:
            offered.append("LOGINDISABLED")
        return offered

    def greeting(self) -> bytes:
        return (f"* OK [CAPABILITY {' '.join(self.capabilities())}] "
                f"{self._settings.server.hostname} IMAP4rev1 mailsrv ready\r\n").encode()

    def count_error(self) -> bool:
        """
        Count a BAD; True once there were too many.
        """
        self._errors += 1
        return self._errors >= self._settings.limits.max_errors

    def connection_lost(self) -> None:
        self._unselect()
        if self.account is not None:
            sessions = self._factory.sessions
            sessions[self.account.address] -= 1
            if sessions[self.account.address] <= 0:
                del sessions[self.account.address]

    def run(self, command: Command) -> Deferred | None:
        """
        Run a command; its responses are written to the protocol.
        """
        handler = getattr(self, "do_" + command.name, None)
        if handler is None:
            self.write(f"{command.tag} BAD Unknown command {command.name}\r\n")
            self.count_error()
            return None
        return Deferred.fromCoroutine(self._run(handler, command))

    async def _run(self, handler, command: Command) -> None:
        try:
            text = await handler(command)
            if text is not None and self._may_renumber(command):
                await self.refresh()
        except No as e:
            code = f"[{e.code}] " if e.code else ""
            self.write(f"{command.tag} NO {code}{e}\r\n")
            if e.bye is not None:
                self.untagged(f"BYE {e.bye}")
                self._protocol.close()
        except Bad as e:
            self.write(f"{command.tag} BAD {e}\r\n")
            if self.count_error():
                self.untagged("BYE Too many errors")
                self._protocol.close()
        except (StoreError, TemporaryStoreError) as e:
            error = _store_errors(e)
            self.write(f"{command.tag} NO [{error.code}] {error}\r\n")
        else:
            if text is not None:
                self.write(f"{command.tag} OK {text}\r\n")

    def _need_auth(self):
        if self.account is None:
            raise Bad("Log in first")

    def _need_selected(self):
        self._need_auth()
        if self.view is None:
            raise Bad("Select a folder first")

    # Any state (RFC 3501 6.1)

    async def do_CAPABILITY(self, command):
        self.untagged("CAPABILITY " + " ".join(self.capabilities()))
        return "CAPABILITY completed"

    async def do_NOOP(self, command):
        if self.view is not None:
            await self.refresh()
        return "NOOP completed"

    async def do_CHECK(self, command):
        self._need_selected()
        await self.refresh()
        return "CHECK completed"

    async def do_LOGOUT(self, command):
        self.untagged("BYE Logging out")
        self.write(f"{command.tag} OK LOGOUT completed\r\n")
        self._protocol.close()

    async def do_ID(self, command):
        # RFC 2971: our identity; what the client says is only logged.
        (fields,) = command.args
        if fields:
            log.info("IMAP client {peer} is {fields}", peer=self._protocol.peer,
                     fields=", ".join(f"{k}={v}" for k, v in fields.items()))
        self.untagged(f'ID ("name" "mailsrv" "version" "{__version__}")')
        return "ID completed"

    # Not authenticated (RFC 3501 6.2)

    async def do_STARTTLS(self, command):
        if self._protocol.tls or self._factory.tls is None:
            raise Bad("TLS is already active" if self._protocol.tls else "STARTTLS not offered")
        if self.account is not None:
            raise Bad("Already logged in")
        self.write(f"{command.tag} OK Begin TLS negotiation now\r\n")
        self._protocol.start_tls()

    async def do_LOGIN(self, command):
        user, password = command.args
        if self.account is not None:
            raise Bad("Already logged in")
        if not self._plaintext_ok():
            # RFC 3501 6.2.3: LOGINDISABLED until TLS.
            raise No("Log in after STARTTLS", "PRIVACYREQUIRED")
        return await self._login(user, password)

    async def do_AUTHENTICATE(self, command):
        mechanism, initial = command.args
        if self.account is not None:
            raise Bad("Already logged in")
        if mechanism != "PLAIN":
            raise No(f"Unsupported mechanism {mechanism}", "CANNOT")
        if not self._plaintext_ok():
            raise No("Authenticate after STARTTLS", "PRIVACYREQUIRED")
        if initial is None:
            self.write(b"+ \r\n")
            self._protocol.flush()
            line = (await self._protocol.read_line()).strip()
            if line == b"*":
                raise Bad("Authentication cancelled")
            try:
                initial = base64.b64decode(line, validate=True)
            except ValueError:
                raise Bad("Invalid base64 in the response") from None
        try:
            authzid, user, password = plain_response(initial)
        except ValueError as e:
            raise Bad(str(e)) from None
        if authzid and authzid.lower() != user.lower():
            raise No("Logging in as another user is not allowed", "AUTHORIZATIONFAILED")
        return await self._login(user, password)

    async def _login(self, user: str, password: str):
        credentials = PeerUsernamePassword(user, password, self._protocol.peer)
        try:
            _, account, _ = await self._factory.portal.login(credentials, None, IMailAccount)
        except UnauthorizedLogin:
            self._auth_failures += 1
            too_many = self._auth_failures >= self._settings.limits.max_auth_failures
            raise No("Authentication failed", "AUTHENTICATIONFAILED",
                     bye="Too many failed logins" if too_many else None) from None
        sessions = self._factory.sessions
        if sessions[account.address] >= self._settings.limits.max_connections_per_user:
            raise No("Too many sessions for this user; close one and try again", "LIMIT")
        sessions[account.address] += 1
        self.account = account
        self._protocol.authenticated()
        log.info("IMAP login {user} from {peer}", user=account.address,
                 peer=self._protocol.peer)
        return f"[CAPABILITY {' '.join(self.capabilities())}] Logged in"

    # Authenticated (RFC 3501 6.3)

    async def do_ENABLE(self, command):
        self._need_auth()
        # Nothing we offer needs enabling (RFC 5161): answer with none.
        self.untagged("ENABLED")
        return "ENABLE completed"

    async def do_NAMESPACE(self, command):
        self._need_auth()
        self.untagged('NAMESPACE (("" ".")) NIL NIL')
        return "NAMESPACE completed"

    async def do_SELECT(self, command):
        return await self._select(command, read_only=False)

    async def do_EXAMINE(self, command):
        return await self._select(command, read_only=True)

    async def _select(self, command, read_only: bool):
        self._need_auth()
        (name,) = command.args
        self._unselect()
        store = self.account.store
        try:
            snapshot = await store.snapshot(name)
        except NoSuchFolder:
            raise No(f"No folder {name}", "NONEXISTENT") from None
        recent = self._factory.recent.claim(self.account.address, snapshot.name,
                                            snapshot.uidvalidity,
                                            [m.uid for m in snapshot.messages], read_only)
        view = FolderView(snapshot, read_only, recent, self._changed)
        self.view = view
        store.add_listener(snapshot.name, view)
        keywords = " ".join(snapshot.keywords)
        flags = f"\\Answered \\Flagged \\Deleted \\Seen \\Draft{' ' if keywords else ''}{keywords}"
        self.untagged(f"{len(view.uids)} EXISTS")
        self.untagged(f"{len(recent)} RECENT")
        self.untagged(f"FLAGS ({flags})")
        permanent = "" if read_only else f"{flags} \\*"
        self.untagged(f"OK [PERMANENTFLAGS ({permanent})] Flags permitted")
        unseen = next((i + 1 for i, message in enumerate(snapshot.messages)
                       if _SEEN not in message.flags), None)
        if unseen is not None:
            self.untagged(f"OK [UNSEEN {unseen}] First unseen")
        self.untagged(f"OK [UIDVALIDITY {view.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {view.uidnext}] Predicted next UID")
        mode = "READ-ONLY" if read_only else "READ-WRITE"
        return f"[{mode}] {command.name} completed"

    def _unselect(self):
        if self.view is not None:
            self.account.store.remove_listener(self.view.name, self.view)
            self.view = None

    def _changed(self):
        if self._idling:
            Deferred.fromCoroutine(self._idle_update())

    async def _idle_update(self):
        if self.view is not None and self.view.stale:
            await self.refresh()
            self._protocol.flush()

    async def do_CREATE(self, command):
        self._need_auth()
        (name,) = command.args
        if name == INBOX:
            raise No("INBOX always exists", "ALREADYEXISTS")
        # RFC 3501 6.3.3: one trailing delimiter declares a parent-to-be.
        await self.account.store.create_folder(name[:-1] if name.endswith(".") else name)
        return "CREATE completed"

    async def do_DELETE(self, command):
        self._need_auth()
        (name,) = command.args
        if name == INBOX:
            raise No("INBOX cannot be deleted", "CANNOT")
        if self.view is not None and self.view.name == name:
            self._unselect()
        await self.account.store.delete_folder(name)
        return "DELETE completed"

    async def do_RENAME(self, command):
        self._need_auth()
        old, new = command.args
        await self.account.store.rename_folder(old, new)
        return "RENAME completed"

    async def do_SUBSCRIBE(self, command):
        self._need_auth()
        await self.account.store.subscribe(command.args[0])
        return "SUBSCRIBE completed"

    async def do_UNSUBSCRIBE(self, command):
        self._need_auth()
        await self.account.store.unsubscribe(command.args[0])
        return "UNSUBSCRIBE completed"

    async def do_LIST(self, command):
        self._need_auth()
        reference, pattern, select_options, return_options = command.args
        if not pattern:
            # RFC 3501 6.3.8: the delimiter and root.
            self.untagged('LIST (\\Noselect) "." ""')
            return "LIST completed"
        special_only = "SPECIAL-USE" in select_options
        subscribed = set(await self.account.store.subscriptions()) \
            if "SUBSCRIBED" in select_options or "SUBSCRIBED" in return_options else set()
        matcher = _matcher(reference, pattern)
        for folder in await self.account.store.list_folders():
            if not matcher(folder.name):
                continue
            if special_only and not folder.special_use:
                continue
            if "SUBSCRIBED" in select_options and folder.name not in subscribed:
                continue
            attributes = ["\\HasChildren" if folder.has_children else "\\HasNoChildren"]
            if not folder.selectable:
                attributes.append("\\Noselect")
            if folder.special_use:
                attributes.append(folder.special_use)
            if folder.name in subscribed:
                attributes.append("\\Subscribed")
            self.untagged(b"LIST (" + " ".join(attributes).encode() + b') "." '
                          + encoding.mailbox(folder.name))
        return "LIST completed"

    async def do_LSUB(self, command):
        self._need_auth()
        reference, pattern = command.args
        matcher = _matcher(reference, pattern)
        subscribed = await self.account.store.subscriptions()
        parents = {}
        for name in subscribed:
            if matcher(name):
                self.untagged(b'LSUB () "." ' + encoding.mailbox(name))
                continue
            # RFC 3501 6.3.9: "%" stops above a subscribed name; the level
            # it reaches is returned \Noselect if not subscribed itself.
            levels = name.split(".")
            for depth in range(1, len(levels)):
                parent = ".".join(levels[:depth])
                if matcher(parent) and parent not in subscribed:
                    parents.setdefault(parent, None)
        for parent in parents:
            self.untagged(b'LSUB (\\Noselect) "." ' + encoding.mailbox(parent))
        return "LSUB completed"

    async def do_STATUS(self, command):
        self._need_auth()
        name, items = command.args
        try:
            status = await self.account.store.status(name)
        except NoSuchFolder:
            raise No(f"No folder {name}", "NONEXISTENT") from None
        values = {"MESSAGES": status.messages, "UIDNEXT": status.uidnext,
                  "UIDVALIDITY": status.uidvalidity, "UNSEEN": status.unseen,
                  "SIZE": status.size, "HIGHESTMODSEQ": status.highest_modseq}
        if "RECENT" in items:
            snapshot = await self.account.store.snapshot(name)
            values["RECENT"] = self._factory.recent.count(
                self.account.address, snapshot.name, snapshot.uidvalidity,
                [m.uid for m in snapshot.messages])
        pairs = " ".join(f"{item} {values[item]}" for item in items)
        self.untagged(b"STATUS " + encoding.mailbox(status.name) + f" ({pairs})".encode())
        return "STATUS completed"

    async def do_APPEND(self, command):
        self._need_auth()
        name, flags, date, literal = command.args
        message = literal.data if literal.data is not None else literal.file
        try:
            result = await self.account.store.append(
                name, message, flags, date.timestamp() if date else None)
        except NoSuchFolder:
            # RFC 3501 6.3.11: the client may CREATE and try again.
            raise No(f"No folder {name}", "TRYCREATE") from None
        finally:
            if literal.file is not None:
                literal.file.close()
        if self.view is not None and self.view.name == name:
            await self.refresh()
        return f"[APPENDUID {result.uidvalidity} {result.uid}] APPEND completed"

    async def do_IDLE(self, command):
        self._need_auth()
        self.write(b"+ idling\r\n")
        if self.view is not None:
            await self.refresh()
        self._protocol.flush()
        self._idling = True
        try:
            line = await self._protocol.read_line()
        finally:
            self._idling = False
        if line.strip().upper() != b"DONE":
            raise Bad("Expected DONE")
        return "IDLE terminated"

    # Selected (RFC 3501 6.4)

    async def refresh(self) -> None:
        """
        Tell the client what changed elsewhere: EXPUNGE, EXISTS, RECENT and
        FETCH FLAGS, from a fresh snapshot compared with the view.  One
        refresh at a time (an idling session may be told twice at once).
        """
        async with self._refreshing:
            view = self.view
            if view is None:
                return
            view.stale = False
            try:
                snapshot = await self.account.store.snapshot(view.name)
            except NoSuchFolder:
                snapshot = None
            if self.view is view and (snapshot is None
                                      or snapshot.uidvalidity != view.uidvalidity):
                # RFC 2180 3.3: the selected folder was deleted or renamed
                # elsewhere (perhaps made anew since); as Dovecot does, the
                # session ends.
                self._unselect()
                self.untagged(f"BYE The selected folder {view.name} is gone")
                self._protocol.close()
            elif self.view is view:
                self._tell_changes(view, snapshot)

    def _tell_changes(self, view: FolderView, snapshot: FolderSnapshot) -> None:
        changes = _changes(view.snapshot, snapshot)
        # Highest first: each EXPUNGE leaves the lower numbers as they were.
        for uid in reversed(changes.expunged):
            self.untagged(f"{view.seq(uid)} EXPUNGE")
            view.recent.discard(uid)
        # This session's own flag changes are in its view, not the snapshot.
        own = view.own_changes()
        changed = [(seq, m) for seq, m in changes.changed if m.uid not in own]
        for uid, info in own.items():
            index = bisect.bisect_left(snapshot.uids, uid)
            if index < len(snapshot.uids) and snapshot.uids[index] == uid and \
                    snapshot.messages[index].flags != info.flags:
                changed.append((index + 1, snapshot.messages[index]))
        changed.sort(key=lambda pair: pair[0])
        added = changes.added
        view.rebase(snapshot)
        for seq, message in changed:
            self.untagged(f"{seq} FETCH (UID {message.uid} FLAGS "
                          f"{encoding.flag_list(view.flags(message.uid)).decode()})")
        if added:
            view.recent |= self._factory.recent.claim(
                self.account.address, view.name, view.uidvalidity, added, view.read_only)
            self.untagged(f"{len(view.uids)} EXISTS")
            self.untagged(f"{len(view.recent)} RECENT")

    def _may_renumber(self, command: Command) -> bool:
        """
        Whether changes made elsewhere are told at the end of this command:
        RFC 3501 7.4.1 forbids EXPUNGE while answering FETCH, STORE or
        SEARCH by sequence number.
        """
        return (self.view is not None and self.view.stale
                and (command.uid or command.name not in ("FETCH", "STORE", "SEARCH")))

    async def do_CLOSE(self, command):
        self._need_selected()
        view = self.view
        if not view.read_only:
            # RFC 3501 6.4.2: expunge silently.
            await self.account.store.expunge(view.name)
        self._unselect()
        return "CLOSE completed"

    async def do_UNSELECT(self, command):
        self._need_selected()
        self._unselect()
        return "UNSELECT completed"

    async def do_EXPUNGE(self, command):
        self._need_selected()
        view = self.view
        if view.read_only:
            raise No("The folder is read-only", "READ-ONLY")
        uids = view.select(command.args[0], True) if command.uid else None
        if uids == []:
            return "EXPUNGE completed"
        await self.account.store.expunge(view.name, uids)
        await self.refresh()
        return "EXPUNGE completed"

    async def do_SEARCH(self, command):
        self._need_selected()
        _, key = command.args
        view = self.view
        messages = view.messages()
        headers = await self.account.store.headers(view.name, view.uids) \
            if needs_header(key) and messages else None
        narrowed = narrow(key, [headers.get(uid, b"") for uid in view.uids]) \
            if headers is not None else None
        reads_body = needs_body(key)
        largest_uid = view.uids[-1] if view.uids else 0
        found = []
        # One candidate at a time: a list of them all kept 10,000 objects
        # alive, and the garbage collector's passes over them were a third
        # of a SEARCH (bench/imap.py).
        for position in range(len(messages)) if narrowed is None else sorted(narrowed):
            info = messages[position]
            seq = position + 1
            candidate = Candidate(seq, info, info.uid in view.recent)
            if headers is not None:
                candidate.header = headers.get(info.uid, b"")
            if reads_body:
                candidate.text = await self._body_text(info.uid)
            if matches(key, candidate, largest_seq=len(messages), largest_uid=largest_uid):
                found.append(info.uid if command.uid else seq)
        self.untagged("SEARCH" + "".join(f" {n}" for n in found))
        return "SEARCH completed"

    async def _body_text(self, uid: int) -> str:
        """
        A message's searchable text, read and decoded in a thread.
        """
        message = await self.account.store.open_message(self.view.name, uid)
        try:
            return await self._factory.run(lambda: body_text(message.read()))
        finally:
            message.close()

    async def do_FETCH(self, command):
        self._need_selected()
        sequence_set, items = command.args
        view = self.view
        uids = view.select(sequence_set, command.uid)
        if command.uid and not any(i.name == "UID" for i in items):
            items = (FetchItem("UID"), *items)
        marks_seen = not view.read_only and any(
            i.section is not None and not i.section.peek for i in items)
        gone = []
        self._protocol.start_streaming()
        try:
            await self._fetch_batches(view, uids, items, marks_seen, _FetchNeeds.of(items), gone)
        finally:
            self._protocol.stop_streaming()
        if gone:
            # RFC 2180 4.1.2, RFC 5530: expunged elsewhere, not yet told.
            raise No("Some of the messages no longer exist", "EXPUNGEISSUED")
        return "FETCH completed"

    async def _fetch_batches(self, view, uids, items, marks_seen, needs: _FetchNeeds,
                             gone) -> None:
        """
        Answer in runs (L{_runs}), loading the next run from the store while
        this one is encoded and sent: the disk and the index work in a
        pool thread while the reactor encodes.
        """
        runs = _runs(uids, view, needs.content)
        loading = self._load_run(view.name, runs[0], needs) if runs else None
        try:
            for number, run in enumerate(runs):
                if marks_seen:
                    await self._mark_seen(view, run)
                outlines, headers, contents = await loading
                loading = None
                if number + 1 < len(runs):
                    loading = self._load_run(view.name, runs[number + 1], needs)
                for uid in run:
                    if (needs.outline and uid not in outlines) or (
                            needs.header and uid not in headers) or (
                            needs.content and uid not in contents):
                        gone.append(uid)
                        continue
                    self.write(self._fetch_one(uid, items, outlines.get(uid), headers.get(uid),
                                               contents.get(uid), marks_seen))
                self._protocol.flush()
                await self._protocol.writable()
        finally:
            if loading is not None:
                loading.addErrback(lambda _: None)  # the FETCH failed or the client left

    def _load_run(self, name, run: list[int], needs: _FetchNeeds) -> Deferred:
        async def load():
            store = self.account.store
            outlines = await store.outlines(name, run) if needs.outline else {}
            headers = await store.headers(name, run) if needs.header else \
                {uid: o.header for uid, o in outlines.items()}
            contents = await store.read_messages(name, run) if needs.content else {}
            return outlines, headers, contents
        return Deferred.fromCoroutine(load())

    async def _mark_seen(self, view, run: list[int]) -> None:
        unseen = [u for u in run if _SEEN not in view.message(u).flags]
        if unseen:
            for info in await self.account.store.set_flags(view.name, unseen, [_SEEN], "add"):
                view.update(info)

    def _fetch_one(self, uid: int, items, outline, header: bytes | None,
                   content: bytes | None, marks_seen: bool) -> bytes:
        view = self.view
        info = view.message(uid)
        parts = []
        wrote_flags = False
        for item in items:
            name = item.name
            if name == "UID":
                parts.append(b"UID %d" % uid)
            elif name == "FLAGS":
                parts.append(b"FLAGS " + encoding.flag_list(view.flags(uid)))
                wrote_flags = True
            elif name == "INTERNALDATE":
                parts.append(b"INTERNALDATE " + encoding.internal_date(info.internal_date))
            elif name == "RFC822.SIZE":
                parts.append(b"RFC822.SIZE %d" % info.size)
            elif name == "ENVELOPE":
                parts.append(b"ENVELOPE " + encoding.envelope(header))
            elif name in ("BODYSTRUCTURE", "BODY"):
                parts.append(name.encode() + b" "
                             + encoding.body_structure(outline, name == "BODYSTRUCTURE"))
            else:
                parts.append(item.section.label().encode() + b" "
                             + _section(outline, header, content, item.section))
        if marks_seen and not wrote_flags:
            parts.append(b"FLAGS " + encoding.flag_list(view.flags(uid)))
        return b"* %d FETCH (" % view.seq(uid) + b" ".join(parts) + b")\r\n"

    async def do_STORE(self, command):
        self._need_selected()
        sequence_set, mode, silent, flags = command.args
        view = self.view
        if view.read_only:
            raise No("The folder is read-only", "READ-ONLY")
        uids = view.select(sequence_set, command.uid)
        if uids:
            for info in await self.account.store.set_flags(view.name, uids, flags, mode):
                view.update(info)
        if not silent:
            for uid in uids:
                uid_part = f"UID {uid} " if command.uid else ""
                self.untagged(f"{view.seq(uid)} FETCH ({uid_part}FLAGS "
                              f"{encoding.flag_list(view.flags(uid)).decode()})")
        return "STORE completed"

    async def do_COPY(self, command):
        return await self._copy(command, move=False)

    async def do_MOVE(self, command):
        return await self._copy(command, move=True)

    async def _copy(self, command, move: bool):
        self._need_selected()
        sequence_set, destination = command.args
        view = self.view
        if move and view.read_only:
            raise No("The folder is read-only", "READ-ONLY")
        uids = view.select(sequence_set, command.uid)
        if not uids:
            return f"{command.name} completed"
        store = self.account.store
        try:
            result = await (store.move if move else store.copy)(view.name, uids, destination)
        except NoSuchFolder:
            raise No(f"No folder {destination}", "TRYCREATE") from None
        code = (f"COPYUID {result.uidvalidity} {_uid_set(s for s, _ in result.uids)} "
                f"{_uid_set(d for _, d in result.uids)}") if result.uids else ""
        if move:
            # RFC 6851 4.3: COPYUID in an untagged OK, then the EXPUNGEs.
            if code:
                self.untagged(f"OK [{code}] Moved")
            await self.refresh()
            return f"{command.name} completed"
        return f"[{code}] COPY completed" if code else "COPY completed"


def _matcher(reference: str, pattern: str):
    """
    Whether a folder name matches a LIST pattern (RFC 3501 6.3.8); INBOX
    matches case-insensitively.
    """
    expression = "".join(".*" if c == "*" else "[^.]*" if c == "%" else re.escape(c)
                         for c in reference + pattern)
    compiled = re.compile(expression + r"\Z", re.DOTALL)
    inbox = re.compile(expression + r"\Z", re.DOTALL | re.IGNORECASE)

    def match(name: str) -> bool:
        if name == INBOX or name.startswith(INBOX + "."):
            return bool(inbox.match(name))
        return bool(compiled.match(name))

    return match



#: Message bytes read from disk for one run of a FETCH of bodies.
FETCH_READ_LIMIT = 8 * 1024 * 1024


def _runs(uids: list[int], view: FolderView, by_size: bool) -> list[list[int]]:
    """
    Split UIDs into runs of at most L{FETCH_BATCH} messages and, when their
    contents are read, at most L{FETCH_READ_LIMIT} bytes (a single bigger
    message gets a run of its own).
    """
    runs, current, size = [], [], 0
    for uid in uids:
        message_size = view.message(uid).size if by_size else 0
        if current and (len(current) == FETCH_BATCH
                        or size + message_size > FETCH_READ_LIMIT):
            runs.append(current)
            current, size = [], 0
        current.append(uid)
        size += message_size
    if current:
        runs.append(current)
    return runs


@dataclass(frozen=True)
class _FetchNeeds:
    """
    What the store must give for a FETCH's items: each is a cost per
    message that most FETCHes avoid (a client listing a folder wants its
    ENVELOPEs, which only the header blocks answer).
    """

    outline: bool  # the MIME outline: BODYSTRUCTURE, or a section of a part
    header: bool  # the top-level header block alone
    content: bool  # the whole message

    @classmethod
    def of(cls, items) -> _FetchNeeds:
        sections = [i.section for i in items if i.section is not None]
        outline = any(i.name in ("BODYSTRUCTURE", "BODY") for i in items) or any(
            s.part for s in sections)
        header = not outline and (any(i.name == "ENVELOPE" for i in items) or any(
            s.text is not None for s in sections))
        content = any(s.part or s.text in (None, "TEXT") for s in sections)
        return cls(outline, header, content)


def _section(outline, header: bytes | None, content: bytes | None, section) -> bytes:
    """
    A body section as a literal (RFC 3501 6.4.5), its partial applied; a
    part that does not exist is an empty string.
    """
    if section.part:
        found = encoding.locate(outline, section)
        if found is None:
            data = b""
        elif isinstance(found, bytes):
            data = found
        else:
            data = content[found.offset:found.offset + found.length]
    elif section.text is None:
        data = content
    elif section.text == "TEXT":
        data = content[len(header):]
    else:
        data = encoding.header_section(header, section)
    if section.partial is not None:
        start, count = encoding.apply_partial(len(data), section.partial)
        data = data[start:start + count]
    return b"{%d}\r\n" % len(data) + data
