"""
Tests for L{mailsrv.store.maildir}: the Maildir++ store, driven
synchronously, and with a real thread pool where concurrency matters.
"""

import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailsrv import files
from mailsrv.store import dovecot_files, maildir
from mailsrv.store.index import OpenIndexes
from mailsrv.store.interfaces import (
    FlagsChanged,
    FolderExists,
    IMailStore,
    IUserStore,
    MessagesAdded,
    MessagesExpunged,
    NoSuchFolder,
    OverQuota,
    StoreError,
    TemporaryStoreError,
)
from mailsrv.store.maildir import MaildirStore, user_directory
from mailsrv.store.testing import run_now

ALICE = "alice@example.org"


def message(n: int, extra: bytes = b"") -> bytes:
    return b"From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n%s" % (n, n, extra)


class Recorder:
    def __init__(self):
        self.events = []

    def folder_changed(self, event):
        self.events.append(event)


class StoreTestMixin:
    def setUp(self):
        self.root = Path(self.mktemp()).absolute()
        self.store = self.make_store()
        self.user = self.store.user(ALICE)
        self.home = user_directory(self.root, ALICE)

    def make_store(self, **kwargs):
        store = MaildirStore(self.root, run_now, **kwargs)
        self.addCleanup(store.close)
        return store

    def result(self, d):
        return self.successResultOf(d)

    def error(self, d, kind):
        return self.failureResultOf(d, kind).value


class LayoutTests(StoreTestMixin, SynchronousTestCase):
    def test_interfaces(self):
        self.assertTrue(verifyObject(IMailStore, self.store))
        self.assertTrue(verifyObject(IUserStore, self.user))

    def test_newUserGetsSpecialFolders(self):
        """
        A new user's store has INBOX and the RFC 6154 special-use folders,
        subscribed.
        """
        folders = self.result(self.user.list_folders())
        self.assertEqual([(f.name, f.special_use) for f in folders],
                         [("INBOX", None), ("Archive", "\\Archive"), ("Drafts", "\\Drafts"),
                          ("Junk", "\\Junk"), ("Sent", "\\Sent"), ("Trash", "\\Trash")])
        self.assertEqual(sorted(self.result(self.user.subscriptions())),
                         ["Archive", "Drafts", "Junk", "Sent", "Trash"])
        for sub in ("cur", "new", "tmp"):
            self.assertTrue((self.home / sub).is_dir())
            self.assertTrue((self.home / ".Sent" / sub).is_dir())

    def test_deliveryOnDisk(self):
        """
        A delivery is durable in new/ under a Maildir name carrying S= and
        W=, as any MDA leaves it; the next look at the folder gives it UID 1
        in Dovecot's uidlist.
        """
        self.assertIsNone(self.result(self.store.deliver(ALICE, b"Subject: x\n\nbody\n")))
        [name] = os.listdir(self.home / "new")
        self.assertRegex(name, r"^\d+\.M\d{6}P\d+Q\d+\.[^,]+,S=17,W=20$")
        self.assertEqual(os.listdir(self.home / "tmp"), [])
        status = self.result(self.user.status("INBOX"))
        uidlist = dovecot_files.read_uidlist(self.home)
        self.assertEqual((uidlist.uidvalidity, uidlist.next_uid), (status.uidvalidity, 2))
        self.assertEqual([(r.uid, r.base) for r in uidlist.records], [(1, name)])

    def test_flagsInFileNames(self):
        """
        Flags are the :2, suffix: system flags as capitals, keywords as
        letters mapped in dovecot-keywords.
        """
        self.result(self.user.append("INBOX", message(1), ["\\Seen", "\\Flagged", "Work"]))
        [name] = os.listdir(self.home / "cur")
        self.assertTrue(name.endswith(":2,FSa"), name)
        self.assertEqual(dovecot_files.read_keywords(self.home), ["Work"])
        self.result(self.user.set_flags("INBOX", [1], ["\\Answered", "\\Deleted", "Home"], "set"))
        [name] = os.listdir(self.home / "cur")
        self.assertTrue(name.endswith(":2,RTb"), name)

    def test_internalDateIsMtime(self):
        self.result(self.user.append("INBOX", message(1), (), 1_000_000_000))
        [info] = self.result(self.user.snapshot("INBOX")).messages
        self.assertEqual(info.internal_date, 1_000_000_000)
        [name] = os.listdir(self.home / "new")
        self.assertEqual(os.stat(self.home / "new" / name).st_mtime, 1_000_000_000)

    def test_sizeWithCRLF(self):
        """
        RFC822.SIZE counts CRLF line ends even for a file stored with LF.
        """
        self.result(self.user.append("INBOX", b"a\nb\r\nc\n"))
        [info] = self.result(self.user.snapshot("INBOX")).messages
        self.assertEqual(info.size, 9)

    def test_foldersInModifiedUtf7(self):
        self.result(self.user.create_folder("Café.Reçus"))
        self.assertTrue((self.home / ".Caf&AOk-.Re&AOc-us" / "cur").is_dir())
        self.assertTrue((self.home / ".Caf&AOk-" / "cur").is_dir())
        self.assertIn("Café.Reçus", [f.name for f in self.result(self.user.list_folders())])


class MessageTests(StoreTestMixin, SynchronousTestCase):
    def test_appendAndRead(self):
        first = self.result(self.user.append("INBOX", message(1)))
        second = self.result(self.user.append("INBOX", message(2), ["\\Seen"]))
        self.assertEqual((first.uid, second.uid), (1, 2))
        snapshot = self.result(self.user.snapshot("INBOX"))
        self.assertEqual([m.uid for m in snapshot.messages], [1, 2])
        self.assertEqual(snapshot.uidnext, 3)
        self.assertEqual(snapshot.messages[1].flags, frozenset({"\\Seen"}))
        with self.result(self.user.open_message("INBOX", 2)) as f:
            self.assertEqual(f.read(), message(2))
        self.error(self.user.open_message("INBOX", 3), KeyError)

    def test_readMessages(self):
        """
        Several messages in one call, with CRLF line ends even when the file
        has bare LFs (as Dovecot stores them); unknown UIDs are left out.
        """
        self.result(self.user.append("INBOX", message(1)))
        self.result(self.user.snapshot("INBOX"))
        (self.home / "cur" / "1700000000.M1P1.lf:2,").write_bytes(
            message(2).replace(b"\r\n", b"\n"))
        self.result(self.user.snapshot("INBOX"))
        self.assertEqual(self.result(self.user.read_messages("INBOX", [1, 2, 9])),
                         {1: message(1), 2: message(2)})

    def test_snapshotShared(self):
        """
        While a folder does not change, every snapshot is the same object
        (IMAP sessions share it); a flag change or an expunge makes a new one.
        """
        for n in range(2):
            self.result(self.user.append("INBOX", message(n)))
        first = self.result(self.user.snapshot("INBOX"))
        self.assertIs(self.result(self.user.snapshot("INBOX")), first)
        self.assertEqual(first.uids, (1, 2))
        self.result(self.user.set_flags("INBOX", [1], ["\\Deleted"], "add"))
        flagged = self.result(self.user.snapshot("INBOX"))
        self.assertIsNot(flagged, first)
        self.assertEqual(flagged.messages[0].flags, frozenset({"\\Deleted"}))
        self.result(self.user.expunge("INBOX"))
        self.assertEqual(self.result(self.user.snapshot("INBOX")).uids, (2,))

    def test_uidsNeverReused(self):
        """
        RFC 3501 2.3.1.1: an expunged message's UID is not given again, even
        after a restart.
        """
        for n in range(3):
            self.result(self.user.append("INBOX", message(n), ["\\Deleted"]))
        self.assertEqual(self.result(self.user.expunge("INBOX")), [1, 2, 3])
        self.store.close()
        user = self.make_store().user(ALICE)
        self.assertEqual(self.result(user.append("INBOX", message(4))).uid, 4)

    def test_uidlistCompacted(self):
        """
        Records of expunged messages leave the uidlist once fewer than 75%
        are live (as Dovecot does); UIDVALIDITY and the next UID stay.
        """
        for n in range(100):
            self.result(self.user.append("INBOX", message(n), ["\\Deleted"] if n < 30 else []))
        self.result(self.user.expunge("INBOX", range(1, 21)))
        self.assertEqual(len(dovecot_files.read_uidlist(self.home).records), 100)
        self.result(self.user.expunge("INBOX"))
        uidlist = dovecot_files.read_uidlist(self.home)
        self.assertEqual([r.uid for r in uidlist.records], list(range(31, 101)))
        self.assertEqual(uidlist.next_uid, 101)
        self.store.close()
        user = self.make_store().user(ALICE)
        self.assertEqual(self.result(user.append("INBOX", message(0))).uid, 101)

    def test_modseqBumpedOnFlagChange(self):
        self.result(self.user.append("INBOX", message(1)))
        self.result(self.user.append("INBOX", message(2)))
        before = self.result(self.user.snapshot("INBOX"))
        [changed] = self.result(self.user.set_flags("INBOX", [1, 99], ["\\Seen"], "add"))
        self.assertEqual(changed.uid, 1)
        self.assertGreater(changed.modseq, before.highest_modseq)
        after = self.result(self.user.snapshot("INBOX"))
        self.assertEqual(after.highest_modseq, changed.modseq)
        self.assertEqual(after.messages[1].modseq, before.messages[1].modseq)
        self.assertEqual(self.result(self.user.set_flags("INBOX", [1], ["\\Seen"], "add")), [])

    def test_expungeOnlyDeleted(self):
        for n, flags in enumerate([["\\Deleted"], [], ["\\Deleted"]]):
            self.result(self.user.append("INBOX", message(n), flags))
        self.assertEqual(self.result(self.user.expunge("INBOX", [3])), [3])
        self.assertEqual(self.result(self.user.expunge("INBOX")), [1])
        snapshot = self.result(self.user.snapshot("INBOX"))
        self.assertEqual([m.uid for m in snapshot.messages], [2])

    def test_copyAndMove(self):
        """
        COPY keeps flags and gives new UIDs in order (COPYUID); MOVE also
        removes the originals.
        """
        self.result(self.user.append("INBOX", message(1), ["\\Seen", "Work"]))
        self.result(self.user.append("INBOX", message(2)))
        self.result(self.user.append("Archive", message(9)))
        copied = self.result(self.user.copy("INBOX", [2, 1, 7], "Archive"))
        archive = self.result(self.user.snapshot("Archive"))
        self.assertEqual(copied.uidvalidity, archive.uidvalidity)
        self.assertEqual(copied.uids, ((1, 2), (2, 3)))
        self.assertEqual(archive.messages[1].flags, frozenset({"\\Seen", "Work"}))
        moved = self.result(self.user.move("INBOX", [1], "Trash"))
        self.assertEqual(moved.uids, ((1, 1),))
        inbox = self.result(self.user.snapshot("INBOX"))
        self.assertEqual([m.uid for m in inbox.messages], [2])
        with self.result(self.user.open_message("Trash", 1)) as f:
            self.assertEqual(f.read(), message(1))
        self.error(self.user.copy("INBOX", [2], "Nowhere"), NoSuchFolder)
        # RFC 6851 3.3: a move within the folder gives the message a new UID.
        self.assertEqual(self.result(self.user.move("INBOX", [2], "INBOX")).uids, ((2, 3),))
        inbox = self.result(self.user.snapshot("INBOX"))
        self.assertEqual([m.uid for m in inbox.messages], [3])
        with self.result(self.user.open_message("INBOX", 3)) as f:
            self.assertEqual(f.read(), message(2))

    def test_copyIntoTheSameFolder(self):
        self.result(self.user.append("INBOX", message(1)))
        self.assertEqual(self.result(self.user.copy("INBOX", [1], "INBOX")).uids, ((1, 2),))

    def test_appendToMissingFolder(self):
        self.error(self.user.append("Nowhere", message(1)), NoSuchFolder)
        self.assertEqual(os.listdir(self.home / "tmp"), [])

    def test_quota(self):
        """
        A delivery that would pass the user's quota fails clearly and leaves
        nothing behind.
        """
        store = self.make_store(quotas=lambda address: 100)
        user = store.user("bob@example.org")
        self.result(user.append("INBOX", b"x" * 60))
        error = self.error(user.append("INBOX", b"y" * 60), OverQuota)
        self.assertIn("over quota", str(error))
        home = user_directory(self.root, "bob@example.org")
        self.assertEqual(os.listdir(home / "tmp"), [])
        self.assertEqual(len(self.result(user.snapshot("INBOX")).messages), 1)

    def test_diskFullIsTemporary(self):
        """
        An I/O error while writing is a temporary failure that leaves no
        partial message.
        """
        def full(*args):
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", full)
        error = self.error(self.user.append("INBOX", message(1)), TemporaryStoreError)
        self.assertIn("No space left on device", str(error))
        self.patch(os, "fsync", os.fdatasync)
        self.assertEqual(os.listdir(self.home / "tmp"), [])
        self.assertEqual(self.result(self.user.snapshot("INBOX")).messages, ())


    def test_deliveryDiskFullIsTemporary(self):
        """
        A delivery that cannot be written is a temporary failure that leaves
        nothing behind.
        """
        def full(*args):
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", full)
        error = self.error(self.store.deliver(ALICE, message(1)), TemporaryStoreError)
        self.assertIn("No space left on device", str(error))
        self.patch(os, "fsync", os.fdatasync)
        self.assertEqual(os.listdir(self.home / "tmp"), [])
        self.assertEqual(os.listdir(self.home / "new"), [])

    def test_deliveryDirectorySyncFails(self):
        """
        When new/ cannot be fsync'd after the rename, the delivery fails and
        the message is taken out again: nothing the sender was not told is
        stored can be seen (it will retry).
        """
        def broken(path):
            raise OSError(5, "Input/output error")

        self.patch(files, "fsync_directory", broken)
        self.error(self.store.deliver(ALICE, message(1)), TemporaryStoreError)
        self.assertEqual(os.listdir(self.home / "new"), [])
        self.assertEqual(os.listdir(self.home / "tmp"), [])

    def test_deliveryOverQuota(self):
        """
        A delivery that would pass the quota is refused before it is put in
        new/.
        """
        store = MaildirStore(self.root, run_now, quotas=lambda address: 100)
        self.addCleanup(store.close)
        self.assertIsNone(self.result(store.deliver("bob@example.org", b"x" * 60)))
        self.error(store.deliver("bob@example.org", b"y" * 60), OverQuota)
        home = user_directory(self.root, "bob@example.org")
        self.assertEqual(len(os.listdir(home / "new")), 1)
        self.assertEqual(os.listdir(home / "tmp"), [])


class OpenFileTests(StoreTestMixin, SynchronousTestCase):
    def test_noFileHeldPerFolder(self):
        """
        Delivering to many users leaves no file open per folder touched, so
        a server with thousands of users does not run out of descriptors.
        """
        def open_files():
            return len(os.listdir("/proc/self/fd"))

        self.store.open_indexes = OpenIndexes(limit=4)
        self.result(self.store.deliver("first@example.org", message(0)))
        before = open_files()
        for n in range(50):
            self.result(self.store.deliver(f"user{n}@example.org", message(n)))
            self.result(self.store.user(f"user{n}@example.org").snapshot("INBOX"))
        # Each open index: db, WAL, shared memory, and the db descriptor of
        # its last checkpoint's connection, which SQLite keeps for reuse
        # while another connection holds the file's (per-process) locks.
        self.assertLessEqual(open_files(), before + 4 * 4)


class TemporaryFileTests(StoreTestMixin, SynchronousTestCase):
    def test_staleTemporariesRemoved(self):
        """
        What a crash left in tmp/ is removed once it is 36 hours old (as
        maildir(5) says), and never sooner: another program may be writing.
        """
        self.result(self.user.append("INBOX", message(1)))
        old, fresh = self.home / "tmp" / "old.1", self.home / "tmp" / "fresh.1"
        old.write_bytes(b"partial")
        fresh.write_bytes(b"partial")
        os.utime(old, (0, 0))
        self.store.close()
        self.result(self.make_store().user(ALICE).snapshot("INBOX"))
        self.assertEqual(os.listdir(self.home / "tmp"), ["fresh.1"])


class ExternalChangeTests(StoreTestMixin, SynchronousTestCase):
    def test_mailDroppedIntoNew(self):
        """
        A file an external MDA drops into new/ is picked up and given the
        next UID.
        """
        self.result(self.user.append("INBOX", message(1)))
        (self.home / "tmp" / "external.1").write_bytes(message(2))
        os.rename(self.home / "tmp" / "external.1", self.home / "new" / "1234.external.1")
        snapshot = self.result(self.user.snapshot("INBOX"))
        self.assertEqual([m.uid for m in snapshot.messages], [1, 2])
        with self.result(self.user.open_message("INBOX", 2)) as f:
            self.assertEqual(f.read(), message(2))

    def test_quietFolderNotRescanned(self):
        """
        A folder whose directories have been quiet is not listed again until
        an entry changes (the directory's mtime moves); then it is.
        """
        self.result(self.user.append("INBOX", message(1)))
        for sub in ("new", "cur"):
            os.utime(self.home / sub, (1_000_000_000, 1_000_000_000))
        self.result(self.user.snapshot("INBOX"))
        scans = []
        real_scan = maildir._Folder._scan
        self.patch(maildir._Folder, "_scan", lambda folder: scans.append(1) or real_scan(folder))
        self.result(self.user.snapshot("INBOX"))
        self.assertEqual(scans, [])
        (self.home / "new" / "1700000000.outside.1").write_bytes(message(2))
        snapshot = self.result(self.user.snapshot("INBOX"))
        self.assertEqual((scans, [m.uid for m in snapshot.messages]), ([1], [1, 2]))

    def test_waitingSnapshotsShared(self):
        """
        Snapshots asked for while one waits for the folder's lock share its
        one look at the folder; one asked for once that look has begun gets
        a look of its own (it may have been told of a later change).
        """
        self.result(self.user.append("INBOX", message(1)))
        looks = []
        real_sync = maildir._Folder.sync
        self.patch(maildir._Folder, "sync", lambda folder: looks.append(1) or real_sync(folder))
        lock = self.user._lock("INBOX")
        self.result(lock.acquire())
        waiting = [self.user.snapshot("INBOX") for _ in range(3)]
        lock.release()
        first, *others = [self.result(d) for d in waiting]
        self.assertEqual(looks, [1])
        self.assertTrue(all(other is first for other in others))
        self.result(self.user.snapshot("INBOX"))
        self.assertEqual(looks, [1, 1])

    def test_workWaitingWhenClosed(self):
        """
        Work that waited for a folder's lock while the store closed (a
        resync after the server stopped) fails as temporary and does not
        reach the stopped thread pool.
        """
        lock = self.user._lock("INBOX")
        self.result(lock.acquire())
        waiting = self.user.snapshot("INBOX")
        self.user.close()
        lock.release()
        self.error(waiting, TemporaryStoreError)

    def test_flagsChangedByAnotherProgram(self):
        recorder = Recorder()
        self.user.add_listener("INBOX", recorder)
        self.result(self.user.append("INBOX", message(1)))
        [name] = os.listdir(self.home / "new")
        os.rename(self.home / "new" / name, self.home / "cur" / (name + ":2,S"))
        snapshot = self.result(self.user.snapshot("INBOX"))
        self.assertEqual(snapshot.messages[0].flags, frozenset({"\\Seen"}))
        self.assertIsInstance(recorder.events[-1], FlagsChanged)

    def test_listenersHearEveryChange(self):
        recorder = Recorder()
        other = Recorder()
        self.user.add_listener("INBOX", recorder)
        self.user.add_listener("Archive", other)
        self.result(self.store.deliver(ALICE, message(1)))
        self.result(self.user.set_flags("INBOX", [1], ["\\Deleted"], "add"))
        self.result(self.user.expunge("INBOX"))
        self.assertEqual([type(e) for e in recorder.events],
                         [MessagesAdded, FlagsChanged, MessagesExpunged])
        self.assertEqual(recorder.events[0].uids, (1,))
        self.assertEqual(recorder.events[2].uids, (1,))
        self.assertEqual(other.events, [])
        self.user.remove_listener("INBOX", recorder)
        self.result(self.store.deliver(ALICE, message(2)))
        self.assertEqual(len(recorder.events), 3)


class FolderTests(StoreTestMixin, SynchronousTestCase):
    def test_createDeleteRename(self):
        self.result(self.user.create_folder("Projects.Alpha"))
        self.error(self.user.create_folder("Projects.Alpha"), FolderExists)
        self.error(self.user.create_folder("inbox"), FolderExists)
        self.result(self.user.append("Projects.Alpha", message(1)))
        alpha = self.result(self.user.snapshot("Projects.Alpha"))
        self.result(self.user.subscribe("Projects.Alpha"))
        self.result(self.user.rename_folder("Projects", "Work"))
        renamed = self.result(self.user.snapshot("Work.Alpha"))
        self.assertEqual((renamed.uidvalidity, [m.uid for m in renamed.messages]),
                         (alpha.uidvalidity, [1]))
        self.assertIn("Work.Alpha", self.result(self.user.subscriptions()))
        self.error(self.user.snapshot("Projects.Alpha"), NoSuchFolder)
        self.result(self.user.delete_folder("Work"))
        names = [f.name for f in self.result(self.user.list_folders())]
        self.assertIn("Work.Alpha", names)
        [work] = [f for f in self.result(self.user.list_folders()) if f.name == "Work"]
        self.assertEqual((work.selectable, work.has_children), (False, True))
        self.error(self.user.delete_folder("INBOX"), StoreError)
        self.error(self.user.delete_folder("Nowhere"), NoSuchFolder)

    def test_renameInbox(self):
        """
        RFC 3501 6.3.5: renaming INBOX moves its messages to the new name
        and leaves INBOX empty.
        """
        self.result(self.user.append("INBOX", message(1), ["\\Seen"]))
        self.result(self.user.rename_folder("INBOX", "Old"))
        self.assertEqual(self.result(self.user.snapshot("INBOX")).messages, ())
        [moved] = self.result(self.user.snapshot("Old")).messages
        self.assertEqual(moved.flags, frozenset({"\\Seen"}))

    def test_renameIntoItselfRefused(self):
        self.result(self.user.create_folder("A"))
        self.error(self.user.rename_folder("A", "A.B"), StoreError)
        self.error(self.user.rename_folder("A", "Sent"), FolderExists)

    def test_uidvalidityNewForARecreatedFolder(self):
        """
        RFC 3501 2.3.1.1: a folder deleted and created again under the same
        name gets a new UIDVALIDITY.
        """
        self.result(self.user.create_folder("X"))
        first = self.result(self.user.snapshot("X")).uidvalidity
        self.result(self.user.delete_folder("X"))
        self.result(self.user.create_folder("X"))
        self.assertGreater(self.result(self.user.snapshot("X")).uidvalidity, first)

    def test_hostileNames(self):
        """
        No folder name can reach outside the user's store: each of these is
        refused by every operation that takes a name, and nothing is made.
        """
        hostile = ["..", "../x", "a/../../etc", "/etc/passwd", "a/b", "a\\b", "\x00",
                   "a\x00b", "a\nb", "a\rb", "\x7f", "\u0085", "", ".", "a..b", ".a", "a.",
                   "%", "a*", "x" * 300, ".".join(["a"] * 40), "\ud800", "é" * 200,
                   "~root", "\u202e", "a\u2028b"]
        before = sorted(p.relative_to(self.root) for p in self.root.rglob("*"))
        for name in hostile:
            for attempt in (lambda n: self.user.create_folder(n),
                            lambda n: self.user.append(n, message(1)),
                            lambda n: self.user.rename_folder("Sent", n),
                            lambda n: self.user.delete_folder(n),
                            lambda n: self.user.snapshot(n)):
                with self.assertRaises(StoreError, msg=repr(name)):
                    attempt(name)
        after = sorted(p.relative_to(self.root) for p in self.root.rglob("*"))
        self.assertEqual(after, before)

    def test_hostileAddresses(self):
        for address in ("../x@example.org", "a@../x", "a/b@example.org", "@example.org",
                        "a@", ".a@example.org", "a@.", "a\x00@example.org"):
            with self.assertRaises(StoreError, msg=address):
                self.store.user(address)


class WatchTests(TestCase):
    """
    Changes made by other programs reach listeners at once (inotify), with
    no store call to trigger them.
    """

    def setUp(self):
        pool = ThreadPool(minthreads=0, maxthreads=4, name="test-watch")
        pool.start()
        self.addCleanup(pool.stop)
        self.root = Path(self.mktemp()).absolute()
        self.store = MaildirStore(self.root,
                                  lambda f, *a, **k: deferToThreadPool(reactor, pool, f, *a, **k),
                                  reactor=reactor)
        self.addCleanup(self.store.close)
        self.user = self.store.user(ALICE)
        self.home = user_directory(self.root, ALICE)

    async def next_event(self, recorder, count):
        for _ in range(200):
            if len(recorder.events) >= count:
                return recorder.events[count - 1]
            await deferLater(reactor, 0.01, lambda: None)
        self.fail(f"no event {count} within 2 s: {recorder.events}")

    async def test_externalDeliveryAndFlags(self):
        await self.user.append("INBOX", message(1))
        recorder = Recorder()
        self.user.add_listener("INBOX", recorder)
        (self.home / "tmp" / "mda.1").write_bytes(message(2))
        os.rename(self.home / "tmp" / "mda.1", self.home / "new" / "1700000000.mda.1")
        added = await self.next_event(recorder, 1)
        self.assertEqual(added, MessagesAdded("INBOX", (2,)))
        os.rename(self.home / "new" / "1700000000.mda.1",
                  self.home / "cur" / "1700000000.mda.1:2,S")
        changed = await self.next_event(recorder, 2)
        self.assertIsInstance(changed, FlagsChanged)
        self.assertEqual([(m.uid, m.flags) for m in changed.messages], [(2, {"\\Seen"})])
        self.user.remove_listener("INBOX", recorder)
        os.unlink(self.home / "cur" / "1700000000.mda.1:2,S")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(recorder.events), 2)


class ConcurrencyTests(TestCase):
    def test_concurrentDeliveries(self):
        """
        Three hundred deliveries at once through a real thread pool are all
        there intact, each with its own UID.  (So many waiting
        at once once overflowed the stack through the folder lock.)
        """
        pool = ThreadPool(minthreads=0, maxthreads=8, name="test-store")
        pool.start()
        self.addCleanup(pool.stop)
        store = MaildirStore(Path(self.mktemp()).absolute(),
                             lambda f, *a, **k: deferToThreadPool(reactor, pool, f, *a, **k))
        self.addCleanup(store.close)
        user = store.user(ALICE)

        async def check():
            await gatherResults([store.deliver(ALICE, message(n)) for n in range(300)])
            snapshot = await user.snapshot("INBOX")
            self.assertEqual([m.uid for m in snapshot.messages], list(range(1, 301)))
            bodies = set()
            for info in snapshot.messages:
                with await user.open_message("INBOX", info.uid) as f:
                    bodies.add(f.read())
            self.assertEqual(bodies, {message(n) for n in range(300)})

        from twisted.internet.defer import Deferred
        return Deferred.fromCoroutine(check())
