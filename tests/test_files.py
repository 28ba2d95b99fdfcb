"""
Tests for L{mailsrv.files}: the fsyncs behind every acknowledged message.
"""

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv import files
from mailsrv.files import fsync_with_directories


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
