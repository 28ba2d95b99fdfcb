"""
Tests for L{mailsrv.files}: the fsyncs behind every acknowledged message.
"""

import os
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv import files
from mailsrv.files import DirectorySync, fsync_with_directories

#: Seconds any thread of these tests may take.
WAIT = 10.0


class FakeDirectoryFsync:
    """
    Stands for L{files.fsync_directory}: records each call's start and end,
    and holds the first call until told to go on (or fails it).
    """

    def __init__(self, fail_first: bool = False):
        self.calls: list[tuple[float, float]] = []
        self.first_started = threading.Event()
        self.go_on = threading.Event()
        self._fail_first = fail_first

    def __call__(self, path: Path) -> None:
        started = time.monotonic()
        first = not self.first_started.is_set()
        if first:
            self.first_started.set()
            assert self.go_on.wait(WAIT), "the test never released the first fsync"
        self.calls.append((started, time.monotonic()))
        if first and self._fail_first:
            raise OSError(5, "Input/output error")


class DirectorySyncTests(SynchronousTestCase):
    def setUp(self):
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.sync = DirectorySync(self.directory)

    def start(self, outcomes: dict, name: str) -> threading.Thread:
        def run():
            called = time.monotonic()
            try:
                self.sync.sync()
                outcomes[name] = ("ok", called, time.monotonic())
            except OSError as e:
                outcomes[name] = (e, called, time.monotonic())

        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, WAIT)
        return thread

    def wait_for_waiters(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while self.sync._changes < count:
            self.assertLess(time.monotonic(), deadline, "the threads never called sync()")
            time.sleep(0.001)

    def test_waitersShareTheNextFsync(self):
        """
        Threads that change the directory while its fsync runs wait for one
        more fsync, which starts after their change, and share it.
        """
        fake = FakeDirectoryFsync()
        self.patch(files, "fsync_directory", fake)
        outcomes = {}
        leader = self.start(outcomes, "leader")
        self.assertTrue(fake.first_started.wait(WAIT))
        followers = [self.start(outcomes, f"follower {n}") for n in range(5)]
        self.wait_for_waiters(6)
        fake.go_on.set()
        for thread in [leader, *followers]:
            thread.join(WAIT)
        self.assertEqual(len(fake.calls), 2)
        second_started = fake.calls[1][0]
        for name, (result, called, returned) in outcomes.items():
            self.assertEqual(result, "ok", name)
            if name != "leader":
                self.assertLessEqual(called, second_started, name)
                self.assertGreaterEqual(returned, fake.calls[1][1], name)

    def test_failedFsyncIsRetriedByWaiters(self):
        """
        An fsync that fails fails the thread that ran it; a thread waiting
        for it runs its own instead of taking the failure as success.
        """
        fake = FakeDirectoryFsync(fail_first=True)
        self.patch(files, "fsync_directory", fake)
        outcomes = {}
        leader = self.start(outcomes, "leader")
        self.assertTrue(fake.first_started.wait(WAIT))
        follower = self.start(outcomes, "follower")
        self.wait_for_waiters(2)
        fake.go_on.set()
        leader.join(WAIT)
        follower.join(WAIT)
        self.assertIsInstance(outcomes["leader"][0], OSError)
        self.assertEqual(outcomes["follower"][0], "ok")
        self.assertEqual(len(fake.calls), 2)

    def test_realDirectory(self):
        """
        Without a fake, sync() fsyncs the real directory and returns.
        """
        (self.directory / "name").write_bytes(b"x")
        self.sync.sync()
        self.sync.sync()


class FsyncWithDirectoriesTests(SynchronousTestCase):
    def test_fileAndDirectoriesSynced(self):
        """
        The file and every directory given are fsync'd before it returns.
        """
        synced = []
        self.patch(files, "fsync_directory", synced.append)
        first, second = Path(self.mktemp()), Path(self.mktemp())
        first.mkdir()
        second.mkdir()
        fd = os.open(first / "file", os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, b"data")
        fsync_with_directories(fd, [first, second])
        self.assertEqual(sorted(synced), sorted([first, second]))

    def test_directoryErrorRaised(self):
        """
        A directory that cannot be fsync'd fails the call.
        """
        fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        with self.assertRaises(FileNotFoundError):
            fsync_with_directories(fd, [Path(self.mktemp())])
