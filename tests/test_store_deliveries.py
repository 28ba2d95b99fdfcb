"""
Tests for L{mailsrv.store.deliveries}: deliveries written in batches.
"""

import os
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mailsrv import files
from mailsrv.store.deliveries import LANE_PATIENCE, DeliveryBatches


class HeldRun:
    """
    Stands for the store's threads: keeps each job until the test runs it.
    """

    def __init__(self):
        self.jobs: list[tuple[Deferred, object, tuple]] = []

    def __call__(self, function, *args) -> Deferred:
        done = Deferred()
        self.jobs.append((done, function, args))
        return done

    def finish(self, index: int = 0) -> None:
        done, function, args = self.jobs.pop(index)
        done.callback(function(*args))


def guard(function, *args):
    try:
        return function(*args)
    except OSError as e:
        raise GuardedError(str(e)) from None


class GuardedError(Exception):
    pass


class DeliveryBatchesTests(SynchronousTestCase):
    def setUp(self):
        self.maildir = Path(self.mktemp())
        for sub in ("tmp", "new"):
            (self.maildir / sub).mkdir(parents=True)
        self.run = HeldRun()
        self.clock = Clock()
        self.batches = DeliveryBatches(self.run, guard, self.clock, lanes=2)
        self.synced: list[Path] = []
        self.real_fsync_directory = files.fsync_directory
        self.patch(files, "fsync_directory", self.record_fsync)

    def record_fsync(self, path: Path) -> None:
        self.synced.append(path)
        self.real_fsync_directory(path)

    def write(self, name: str, fail_with: OSError | None = None) -> tuple[Path, str]:
        if fail_with is not None:
            raise fail_with
        temporary = self.maildir / "tmp" / name
        temporary.write_bytes(b"Subject: " + name.encode() + b"\r\n\r\nbody\r\n")
        return temporary, name

    def deliver(self, name: str, new: Path | None = None,
                fail_with: OSError | None = None) -> list:
        outcome = []
        self.batches.deliver(new or self.maildir / "new", self.write, name,
                             fail_with).addBoth(outcome.append)
        return outcome

    def test_queuedDeliveriesShareOneBatch(self):
        """
        While a batch is being written, deliveries wait; when it is done,
        all of them go in one job with one fsync of new/, and each is told
        once its file is there.
        """
        first = self.deliver("1")
        waiting = [self.deliver(str(n)) for n in range(2, 7)]
        self.assertEqual(len(self.run.jobs), 1)
        self.run.finish()
        self.assertEqual(first, [None])
        self.assertEqual(waiting, [[]] * 5)
        self.assertEqual(len(self.run.jobs), 1, "the waiting deliveries start together")
        self.synced.clear()
        self.run.finish()
        self.assertEqual(waiting, [[None]] * 5)
        self.assertEqual(self.synced, [self.maildir / "new"])
        self.assertEqual(sorted(os.listdir(self.maildir / "new")), [str(n) for n in range(1, 7)])
        self.assertEqual(os.listdir(self.maildir / "tmp"), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowBatchOpensAnotherLane(self):
        """
        A batch that takes longer than L{LANE_PATIENCE} (a large message, a
        slow disk) does not hold back the deliveries behind it: they start
        beside it, up to the number of lanes.
        """
        self.deliver("large")
        behind = self.deliver("small")
        self.clock.advance(LANE_PATIENCE * 0.9)
        self.assertEqual(len(self.run.jobs), 1)
        self.clock.advance(LANE_PATIENCE * 0.2)
        self.assertEqual(len(self.run.jobs), 2)
        self.run.finish(1)
        self.assertEqual(behind, [None])
        self.deliver("third")
        self.clock.advance(LANE_PATIENCE * 2)
        self.assertEqual(len(self.run.jobs), 2)
        self.deliver("fourth")
        self.clock.advance(LANE_PATIENCE * 2)
        self.assertEqual(len(self.run.jobs), 2, "two lanes at most")
        self.run.finish()
        self.assertEqual(len(self.run.jobs), 2, "the fourth takes the free lane")
        self.run.finish()
        self.run.finish()
        self.assertEqual(sorted(os.listdir(self.maildir / "new")),
                         ["fourth", "large", "small", "third"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failedDeliveryFailsAlone(self):
        """
        A message that cannot be written fails with the guard's error; the
        others of its batch are delivered.
        """
        self.deliver("busy")
        good = self.deliver("good")
        bad = self.deliver("bad", fail_with=OSError(28, "No space left on device"))
        self.run.finish()
        self.run.finish()
        self.assertEqual(good, [None])
        bad[0].trap(GuardedError)
        self.assertIn("No space left on device", str(bad[0].value))
        self.assertIn("good", os.listdir(self.maildir / "new"))

    def test_failedDirectoryFsyncTakesItsMessagesOut(self):
        """
        When a new/ cannot be fsync'd, every message just renamed into it
        fails and is removed (the senders retry); a batch's other folders
        are not affected (RFC 5321 6.1: no 250 before the message is safe).
        """
        other = Path(self.mktemp())
        (other / "new").mkdir(parents=True)

        def broken(path):
            if path == self.maildir / "new":
                raise OSError(5, "Input/output error")
            self.real_fsync_directory(path)

        self.patch(files, "fsync_directory", broken)
        self.deliver("busy", other / "new")
        lost = [self.deliver("a"), self.deliver("b")]
        kept = self.deliver("c", other / "new")
        self.run.finish()
        self.run.finish()
        for outcome in lost:
            outcome[0].trap(GuardedError)
        self.assertEqual(kept, [None])
        self.assertEqual(os.listdir(self.maildir / "new"), [])
        self.assertEqual(os.listdir(self.maildir / "tmp"), [])
        self.assertEqual(sorted(os.listdir(other / "new")), ["busy", "c"])

    def test_threadsUnavailable(self):
        """
        When the threads refuse the job (the pool is shut down), every
        delivery of the batch fails with that error, and later deliveries
        still get their turn.
        """
        def refuse(function, *args):
            raise RuntimeError("cannot schedule new futures after shutdown")

        refusing = DeliveryBatches(refuse, guard)
        for name in ("x", "y"):
            outcome = []
            refusing.deliver(self.maildir / "new", self.write, name, None).addBoth(
                outcome.append)
            outcome[0].trap(RuntimeError)
        self.assertEqual(os.listdir(self.maildir / "new"), [])
