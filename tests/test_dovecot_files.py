"""
Tests for L{mailsrv.store.dovecot_files}: Dovecot's uidlist, read whole or
by its appended tail.
"""

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.store import dovecot_files
from mailsrv.store.dovecot_files import (
    LOCK,
    UIDLIST,
    UidRecord,
    append_records,
    read_uidlist,
    uidlist_lock,
)
from mailsrv.store.interfaces import TemporaryStoreError


class UidListTests(SynchronousTestCase):
    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.path = self.folder / UIDLIST
        self.path.write_bytes(b"3 V1234 N3 G0123456789abcdef0123456789abcdef\n"
                              b"1 :1.M1P1.host,S=10,W=12\n"
                              b"2 W99 :2.M1P1.host:2,S\n")

    def test_read(self):
        """
        The header, the records (extension fields kept, flags after ':'
        dropped from the name), and the next UID.
        """
        uidlist = read_uidlist(self.folder)
        self.assertEqual((uidlist.uidvalidity, uidlist.next_uid), (1234, 3))
        self.assertEqual(uidlist.records, [UidRecord(1, "1.M1P1.host,S=10,W=12"),
                                           UidRecord(2, "2.M1P1.host", "W99")])
        self.assertEqual(uidlist.uid_of["2.M1P1.host"], 2)

    def test_appendedTailOnly(self):
        """
        Lines another process appended are read without parsing the list
        again; a line still being written waits until it is whole; the next
        UID follows the last record even when the header lags (as Dovecot
        reads it).
        """
        uidlist = read_uidlist(self.folder)
        with open(self.path, "ab") as f:
            f.write(b"7 :7.M1P1.host\n8 :8.M1")
        self.assertIs(read_uidlist(self.folder, uidlist), uidlist)
        self.assertEqual([r.uid for r in uidlist.records], [1, 2, 7])
        with open(self.path, "ab") as f:
            f.write(b"P1.host\n")
        read_uidlist(self.folder, uidlist)
        self.assertEqual(uidlist.records[-1], UidRecord(8, "8.M1P1.host"))
        self.assertEqual(uidlist.next_uid, 9)

    def test_replacedFileReadAgain(self):
        uidlist = read_uidlist(self.folder)
        replacement = self.folder / "new"
        replacement.write_bytes(b"3 V99 N5 Gab\n4 :4.x\n")
        os.rename(replacement, self.path)
        fresh = read_uidlist(self.folder, uidlist)
        self.assertIsNot(fresh, uidlist)
        self.assertEqual((fresh.uidvalidity, [r.uid for r in fresh.records]), (99, [4]))

    def test_appendRecords(self):
        uidlist = read_uidlist(self.folder)
        append_records(self.folder, uidlist, [UidRecord(3, "3.x"), UidRecord(4, "4.x")])
        self.assertEqual(uidlist.next_uid, 5)
        again = read_uidlist(self.folder)
        self.assertEqual([r.uid for r in again.records], [1, 2, 3, 4])
        self.assertEqual(read_uidlist(self.folder, uidlist).size, self.path.stat().st_size)

    def test_notVersion3(self):
        for text in (b"1 777 10\n5 name\n", b"", b"3 N5\n"):
            self.path.write_bytes(text)
            self.assertIsNone(read_uidlist(self.folder), text)


class UidListLockTests(SynchronousTestCase):
    """
    The uidlist dotlock: held while the block runs, and broken when left by
    a crash.
    """

    def setUp(self):
        self.folder = Path(self.mktemp())
        self.folder.mkdir()
        self.patch(dovecot_files, "LOCK_WAIT_SECONDS", 0.2)

    def leave_lock(self, owner: str, age: float) -> None:
        lock = self.folder / LOCK
        lock.write_text(owner)
        old = lock.stat().st_mtime - age
        os.utime(lock, (old, old))

    def test_heldWhileRunning(self):
        with uidlist_lock(self.folder):
            self.assertEqual((self.folder / LOCK).read_text(),
                             f"{os.getpid()}:{dovecot_files._HOST}")
        self.assertFalse((self.folder / LOCK).exists())

    def test_liveOwnerWaitedFor(self):
        """
        A fresh lock of a live process is waited for, then a temporary
        failure (the client retries).
        """
        self.leave_lock(f"{os.getppid()}:{dovecot_files._HOST}", 10)
        with self.assertRaises(TemporaryStoreError), uidlist_lock(self.folder):
            pass

    def test_leftByACrash(self):
        """
        A lock naming a dead process, an empty one (its maker died before
        writing its name), or any untouched for two minutes is broken.
        """
        for owner, age in ((f"999999999:{dovecot_files._HOST}", 5), ("", 5),
                           (f"{os.getppid()}:{dovecot_files._HOST}", 200)):
            self.leave_lock(owner, age)
            with uidlist_lock(self.folder):
                pass
        self.leave_lock("", 0)
        with self.assertRaises(TemporaryStoreError), uidlist_lock(self.folder):
            pass
