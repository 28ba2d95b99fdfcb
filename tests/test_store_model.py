"""
Model-based test of the Maildir store: hypothesis runs random sequences of
deliver, append, flag changes, expunge, copy, move, create, rename, delete
and restart against the store and against a plain model of IMAP semantics
(RFC 3501 2.3.1.1 for UIDs, 6.3.4-6.3.5 for DELETE and RENAME, RFC 6851 for
MOVE), and checks after every step that they agree.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mailsrv.store.interfaces import FolderExists, NoSuchFolder, StoreError
from mailsrv.store.maildir import DEFAULT_FOLDERS, MaildirStore
from mailsrv.store.testing import run_now

ADDRESS = "model@example.org"
NAMES = st.sampled_from(["INBOX", "Trash", "A", "A.B", "B", "Café", "Café.Reçus"])
FLAGS = st.frozensets(st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "\\Answered",
                                       "\\Draft", "Work", "$Forwarded"]), max_size=4)
BODIES = st.binary(max_size=300).map(lambda b: b"Subject: model\r\n\r\n" + b)


@dataclass
class ModelFolder:
    next_uid: int = 1
    uidvalidity: int | None = None
    messages: dict[int, tuple[bytes, frozenset]] = field(default_factory=dict)

    def add(self, body, flags) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = (body, frozenset(flags))
        return uid


def outcome(d):
    """
    The result of an already-fired Deferred (the store runs synchronously
    here), or the exception it failed with.
    """
    results = []
    d.addBoth(results.append)
    [result] = results
    return result.value if isinstance(result, Failure) else result


class StoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="mailsrv-model-"))
        self.open_store()
        self.model = {"INBOX": ModelFolder()}
        self.model.update({name: ModelFolder() for name, _ in DEFAULT_FOLDERS})

    def open_store(self):
        self.store = MaildirStore(self.directory, run_now)
        self.user = self.store.user(ADDRESS)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def uids(self, name, data):
        present = sorted(self.model[name].messages) if name in self.model else []
        return data.draw(st.lists(st.sampled_from([*present, 999]), max_size=4))

    @rule(body=BODIES)
    def deliver(self, body):
        # A delivery gets its UID at the next look at the folder, the
        # model's next one: nothing else adds to INBOX in between.
        assert outcome(self.store.deliver(ADDRESS, body)) is None
        self.model["INBOX"].add(body, ())

    @rule(name=NAMES, body=BODIES, flags=FLAGS)
    def append(self, name, body, flags):
        result = outcome(self.user.append(name, body, flags))
        if name not in self.model:
            assert isinstance(result, NoSuchFolder), result
        else:
            assert result.uid == self.model[name].add(body, flags), (result, name)

    @rule(name=NAMES, flags=FLAGS, mode=st.sampled_from(["set", "add", "remove"]),
          data=st.data())
    def set_flags(self, name, flags, mode, data):
        uids = self.uids(name, data)
        result = outcome(self.user.set_flags(name, uids, flags, mode))
        if name not in self.model:
            assert isinstance(result, NoSuchFolder), result
            return
        folder = self.model[name]
        expected = []
        for uid in sorted(set(uids) & set(folder.messages)):
            body, current = folder.messages[uid]
            new = {"set": flags, "add": current | flags, "remove": current - flags}[mode]
            if new != current:
                folder.messages[uid] = (body, frozenset(new))
                expected.append(uid)
        assert [i.uid for i in result] == expected, (result, expected)

    @rule(name=NAMES, data=st.data())
    def expunge(self, name, data):
        uids = data.draw(st.none() | st.just(self.uids(name, data)))
        result = outcome(self.user.expunge(name, uids))
        if name not in self.model:
            assert isinstance(result, NoSuchFolder), result
            return
        folder = self.model[name]
        doomed = sorted(u for u, (_, flags) in folder.messages.items()
                        if "\\Deleted" in flags and (uids is None or u in uids))
        for uid in doomed:
            del folder.messages[uid]
        assert result == doomed, (result, doomed)

    @rule(source=NAMES, destination=NAMES, move=st.booleans(), data=st.data())
    def copy_or_move(self, source, destination, move, data):
        uids = self.uids(source, data)
        operation = self.user.move if move else self.user.copy
        result = outcome(operation(source, uids, destination))
        if source not in self.model or destination not in self.model:
            assert isinstance(result, NoSuchFolder), result
            return
        taken = sorted(set(uids) & set(self.model[source].messages))
        pairs = []
        for uid in taken:
            body, flags = self.model[source].messages[uid]
            pairs.append((uid, self.model[destination].add(body, flags)))
        if move:
            for uid in taken:
                del self.model[source].messages[uid]
        assert tuple(pairs) == result.uids, (pairs, result)

    @rule(name=NAMES)
    def create(self, name):
        result = outcome(self.user.create_folder(name))
        if name in self.model:
            assert isinstance(result, FolderExists), result
            return
        assert result is None, result
        self.create_in_model(name)

    @rule(name=NAMES)
    def delete(self, name):
        result = outcome(self.user.delete_folder(name))
        if name == "INBOX":
            assert isinstance(result, StoreError), result
        elif name not in self.model:
            assert isinstance(result, NoSuchFolder), result
        else:
            assert result is None, result
            del self.model[name]

    @rule(old=NAMES, new=NAMES)
    def rename(self, old, new):
        result = outcome(self.user.rename_folder(old, new))
        if new in ("INBOX", old) or new in self.model:
            assert isinstance(result, FolderExists), result
        elif old == "INBOX":
            # RFC 3501 6.3.5: the messages move to the new name; INBOX stays.
            assert result is None, result
            self.create_in_model(new)
            inbox = self.model["INBOX"]
            for uid in sorted(inbox.messages):
                self.model[new].add(*inbox.messages[uid])
            inbox.messages.clear()
        elif new.startswith(old + "."):
            assert isinstance(result, StoreError), result
        elif not any(n == old or n.startswith(old + ".") for n in self.model):
            assert isinstance(result, NoSuchFolder), result
        else:
            assert result is None, result
            for name in [n for n in self.model if n == old or n.startswith(old + ".")]:
                self.model[new + name[len(old):]] = self.model.pop(name)

    def create_in_model(self, name):
        """
        CREATE makes the missing superior names too (RFC 3501 6.3.3).
        """
        levels = name.split(".")
        for i in range(1, len(levels) + 1):
            self.model.setdefault(".".join(levels[:i]), ModelFolder())

    @rule()
    def restart(self):
        """
        Drop every in-memory state: a server restart.
        """
        self.store.close()
        self.open_store()

    @invariant()
    def agrees_with_model(self):
        folders = outcome(self.user.list_folders())
        assert sorted(f.name for f in folders if f.selectable) == sorted(self.model), (
            folders, self.model)
        for name, expected in self.model.items():
            snapshot = outcome(self.user.snapshot(name))
            if expected.uidvalidity is None:
                expected.uidvalidity = snapshot.uidvalidity
            assert snapshot.uidvalidity == expected.uidvalidity, name
            assert snapshot.uidnext == expected.next_uid, (name, snapshot, expected)
            assert [m.uid for m in snapshot.messages] == sorted(expected.messages), name
            for info in snapshot.messages:
                body, flags = expected.messages[info.uid]
                assert info.flags == flags, (name, info, flags)
                with outcome(self.user.open_message(name, info.uid)) as f:
                    assert f.read() == body, (name, info.uid)

    def assertEqual(self, first, second):
        assert first == second, (first, second)


StoreMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class StoreModelTests(SynchronousTestCase):
    def test_storeMatchesModel(self):
        # Durability is tested elsewhere; here fsync only costs time.
        self.patch(os, "fsync", lambda fd: None)
        StoreMachine.TestCase("runTest").runTest()
