"""
Child process for the store crash test: 200 concurrent durable writes
through a real thread pool, printing "OK <n> <uid>" as each is
acknowledged, until the parent kills it.  Even messages are delivered (as
SMTP does: no UID yet, "-"), odd ones appended (as IMAP APPEND does).
"""

import sys
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from mailsrv.store.maildir import MaildirStore

ADDRESS = "crash@example.org"


def body(n: int) -> bytes:
    """
    Message n: its number in the subject and all through a 256 KB body, so a
    partial file is easy to tell from a whole one, and 200 of them take long
    enough to write that the kill lands in the middle.
    """
    line = b"%d\r\n" % n
    return b"Subject: crash %d\r\n\r\n" % n + line * (256 * 1024 // len(line))


async def deliver_all(root: Path, count: int):
    pool = ThreadPool(minthreads=0, maxthreads=16, name="crash")
    pool.start()
    store = MaildirStore(root, lambda f, *a, **k: deferToThreadPool(reactor, pool, f, *a, **k))

    async def one(n):
        # Start over a third of a second, as mail arrives, so that some
        # deliveries are acknowledged while others are still being written.
        await task.deferLater(reactor, n * 0.002, lambda: None)
        if n % 2:
            uid = (await store.user(ADDRESS).append("INBOX", body(n))).uid
        else:
            await store.deliver(ADDRESS, body(n))
            uid = "-"
        sys.stdout.write(f"OK {n} {uid}\n")
        sys.stdout.flush()

    await Deferred.fromCoroutine(_gather([one(n) for n in range(count)]))
    pool.stop()


async def _gather(coroutines):
    await gatherResults([Deferred.fromCoroutine(c) for c in coroutines])


if __name__ == "__main__":
    task.react(lambda _: Deferred.fromCoroutine(deliver_all(Path(sys.argv[1]),
                                                            int(sys.argv[2]))))
