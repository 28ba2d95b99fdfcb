"""
Password logins per second through the server's own portal, with N logins
in flight at once, while a 10 ms reactor timer records how late it runs.

The hash checks run in the server's hashing thread pool, so the timer's
worst lateness shows whether the reactor stayed free while they ran.

    python bench/logins.py                      # 50 concurrent bcrypt logins
    python bench/logins.py --scheme argon2 --concurrency 50 --rounds 4
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailsrv.config import load_settings
from mailsrv.cred.credentials import PeerUsernamePassword
from mailsrv.cred.passwords import hash_password
from mailsrv.cred.realm import IMailAccount
from mailsrv.service import make_service
from mailsrv.threads import ThreadPoolService

TICK = 0.010


class LatenessProbe:
    """
    A 10 ms timer that records how late each tick fires.
    """

    def __init__(self):
        self.worst = 0.0
        self.lateness = []
        self._expected = None
        self._loop = task.LoopingCall(self._tick)

    def start(self):
        self._expected = time.monotonic()
        self._loop.start(TICK, now=True)

    def _tick(self):
        now = time.monotonic()
        late = max(0.0, now - self._expected)
        self.lateness.append(late)
        self.worst = max(self.worst, late)
        self._expected = now + TICK

    def stop(self):
        self._loop.stop()


async def run(args):
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-"))
    config = directory / "mailsrv.toml"
    config.write_text('[listeners]\nsmtp = []\nsubmission = []\nsubmissions = []\n'
                      'imap = []\nimaps = []\npop3 = []\npop3s = []\n')
    settings = load_settings(config, directory / "data")
    service = make_service(settings, reactor=reactor)
    stored = hash_password("benchmark-password", args.scheme)
    users = [f"user{n}@localhost" for n in range(args.concurrency)]
    Path(settings.auth.passwd_file).write_text("".join(f"{u}:{stored}\n" for u in users))
    service.startService()
    await service.checker.users()

    probe = LatenessProbe()
    probe.start()
    latencies = []

    async def login(user):
        started = time.monotonic()
        credentials = PeerUsernamePassword(user, "benchmark-password", f"192.0.2.{len(user)}")
        await service.portal.login(credentials, None, IMailAccount)
        latencies.append(time.monotonic() - started)

    started = time.monotonic()
    for _ in range(args.rounds):
        await gatherResults([Deferred.fromCoroutine(login(u)) for u in users])
    elapsed = time.monotonic() - started
    probe.stop()
    await service.stopService()
    shutil.rmtree(directory)

    total = args.concurrency * args.rounds
    latencies.sort()
    threads = next(s for s in service if isinstance(s, ThreadPoolService)).max_threads
    print(f"scheme={args.scheme} concurrency={args.concurrency} logins={total} "
          f"hash threads={threads}")
    print(f"logins/s                 {total / elapsed:8.1f}")
    print(f"login latency p50 / p99  {statistics.median(latencies) * 1000:8.0f} ms / "
          f"{latencies[int(len(latencies) * 0.99) - 1] * 1000:.0f} ms")
    print(f"10 ms timer lateness     worst {probe.worst * 1000:.1f} ms, "
          f"p99 {sorted(probe.lateness)[int(len(probe.lateness) * 0.99) - 1] * 1000:.1f} ms "
          f"over {len(probe.lateness)} ticks")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--scheme", choices=("bcrypt", "argon2"), default="bcrypt")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    task.react(lambda _reactor: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
