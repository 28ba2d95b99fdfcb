"""
Crash test: SIGKILL the store in the middle of 200 concurrent deliveries
and appends, restart, and check the promise behind every 250 OK: each one
that was acknowledged is there exactly once, whole, an append under the UID
it was told; nothing partial is visible; no UID is ever given twice.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.store.maildir import MaildirStore
from mailsrv.store.testing import run_now
from tests.sourcetree import SOURCE_ROOT, server_environment
from tests.store_crash_child import ADDRESS, body

DELIVERIES = 200


def kill_during_deliveries(root: Path) -> tuple[dict[int, int | None], int]:
    """
    Run the child and SIGKILL it once some deliveries are acknowledged while
    others are still being written in tmp/.

    @return: every acknowledgement it printed ({message number: UID, or
        None for a delivery}), and how many files were in tmp/ just before
        the kill.
    """
    home = root / "example.org" / "crash"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store_crash_child", str(root), str(DELIVERIES)],
        cwd=SOURCE_ROOT, env=server_environment(), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    writing = 0
    while time.monotonic() < deadline and child.poll() is None:
        try:
            writing = len(os.listdir(home / "tmp"))
        except FileNotFoundError:
            continue
        appended = sum(1 for line in list(lines) if not line.endswith(b" -\n"))
        if writing and len(lines) >= 10 and appended >= 5:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(60)
    reader.join(60)
    acknowledged = {int(n): None if uid == b"-" else int(uid) for n, uid in
                    (re.fullmatch(rb"OK (\d+) (\d+|-)\n", line).groups() for line in lines)}
    return acknowledged, writing


class CrashTests(SynchronousTestCase):
    def test_killedMidDelivery(self):
        root = Path(self.mktemp()).absolute()
        acknowledged, writing = kill_during_deliveries(root)
        self.assertGreaterEqual(len(acknowledged), 10)
        self.assertGreater(writing, 0, "the kill did not land mid-delivery")
        self.assertLess(len(acknowledged), DELIVERIES)

        store = MaildirStore(root, run_now)
        self.addCleanup(store.close)
        user = store.user(ADDRESS)
        snapshot = self.successResultOf(user.snapshot("INBOX"))
        found: dict[int, list[int]] = {}
        for info in snapshot.messages:
            with self.successResultOf(user.open_message("INBOX", info.uid)) as f:
                data = f.read()
            n = int(re.match(rb"Subject: crash (\d+)\r\n", data).group(1))
            self.assertEqual(data, body(n), f"message {n} (UID {info.uid}) is not whole")
            found.setdefault(n, []).append(info.uid)
        for n, uid in acknowledged.items():
            # Appends were told their UID; deliveries get theirs now.
            self.assertEqual(len(found.get(n, [])), 1, f"acknowledged message {n}")
            if uid is not None:
                self.assertEqual(found[n], [uid], f"acknowledged message {n}")
        # Deliveries that were not acknowledged may or may not be there
        # (the sender retries); none is there twice.
        self.assertTrue(all(len(uids) == 1 for uids in found.values()))

        told = [uid for uid in acknowledged.values() if uid is not None]
        self.assertTrue(told, "no append was acknowledged")
        highest = max([*told, *(u for us in found.values() for u in us)])
        after = self.successResultOf(user.append("INBOX", body(DELIVERIES)))
        self.assertGreater(after.uid, highest)
