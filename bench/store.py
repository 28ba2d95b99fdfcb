"""
The Maildir store under load: durable deliveries per second (1 and 50
writers, one user or many), and the time and memory to open and list a
large folder, cold and warm, with and without a Dovecot uidlist.

Blocking disk work runs in a real thread pool, as in the server.  Every
delivery is checked afterwards: distinct UIDs, and exactly that many files
on disk and messages in a fresh store's listing.

    python bench/store.py                        # 100,000-message folder
    python bench/store.py --messages 10000 --threads 16 --deliveries 500
    python bench/store.py --dir /var/tmp         # temp dirs on another disk
"""

import argparse
import ctypes
import gc
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from functools import partial
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailsrv.store import dovecot_files
from mailsrv.store.index import INDEX
from mailsrv.store.interfaces import INBOX
from mailsrv.store.maildir import MaildirStore, user_directory

DOMAIN = "bench.example"
BIG = f"big@{DOMAIN}"
MB = 1024 * 1024
#: How long a folder may take to answer after a delivery burst before we
#: call it stuck.
STUCK = 10.0
_FILLER = ("The quick brown fox jumps over the lazy dog while the mail server "
           "keeps every message durable on disk before it says yes. ")


# -- messages and folders -----------------------------------------------------


def make_message(n: int, size: int, recipient: str) -> bytes:
    """
    A plain RFC 5322 message of about C{size} bytes, LF line ends (as a
    Maildir holds them), distinct by C{n}.
    """
    head = (f"Return-Path: <sender{n}@example.net>\n"
            f"Delivered-To: {recipient}\n"
            f"Received: from mx.example.net (mx.example.net [192.0.2.1])\n"
            f"\tby mail.{DOMAIN} with ESMTPS id {n:08x}\n"
            f"From: Sender {n} <sender{n}@example.net>\n"
            f"To: <{recipient}>\n"
            f"Subject: Benchmark message {n}\n"
            f"Date: Mon, 02 Jan 2006 15:04:05 +0000\n"
            f"Message-ID: <{n}.{uuid.UUID(int=n).hex}@example.net>\n"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n\n").encode()
    line = (_FILLER * 2)[n % 60:n % 60 + 71].encode() + b"\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


def fill_folder(directory: Path, count: int, seed: int = 7) -> tuple[list[str], dict]:
    """
    Write C{count} messages of 2-4 KB straight into a Maildir (not through
    the store): 30% in new/, the rest in cur/ with flags, mostly \\Seen.

    @return: the base names in delivery order, and what a listing must show.
    """
    rng = random.Random(seed)
    for sub in ("cur", "new", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    start = int(time.time()) - count
    pid = os.getpid()
    bases = []
    seen = total_vsize = 0
    flags_by_letters = {"": 0, "S": 0, "RS": 0, "FS": 0}
    for n in range(count):
        data = make_message(n, rng.randint(2048, 4096), BIG)
        size, vsize = len(data), len(data) + data.count(b"\n")
        base = f"{start + n}.M{rng.randrange(10**6):06d}P{pid}Q{n}.bench,S={size},W={vsize}"
        roll = rng.random()
        if roll < 0.3:
            path = directory / "new" / base
        else:
            letters = "S" if roll < 0.85 else ("RS" if roll < 0.92 else "FS" if roll < 0.97
                                                else "")
            flags_by_letters[letters] += 1
            seen += "S" in letters
            path = directory / "cur" / f"{base}:2,{letters}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        bases.append(base)
        total_vsize += vsize
    return bases, {"seen": seen, "vsize": total_vsize}


def uidlist_text(bases: list[str], uidvalidity: int) -> str:
    """
    A Dovecot version 3 C{dovecot-uidlist} for the bases, as a migrated
    Dovecot Maildir has it (UIDs with gaps, as after expunges).
    """
    lines = []
    uid = 0
    for n, base in enumerate(bases):
        uid += 1 + (n % 17 == 0)
        lines.append(f"{uid} :{base}\n")
    return f"3 V{uidvalidity} N{uid + 1} G{uuid.uuid4().hex}\n" + "".join(lines)


# -- measuring -----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def proc_status() -> dict[str, int]:
    """
    VmRSS and VmHWM of this process, in bytes.
    """
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def trim_heap() -> None:
    """
    Give freed heap memory back to the system (glibc), so RSS shows what is in use.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """
    Reset VmHWM to the current RSS (Linux 4.0+), so it reads as this step's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def drop_caches() -> str | None:
    """
    Write back and drop the page, dentry and inode caches; the reason it
    could not, or L{None}.
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        return f"cannot drop caches ({e.strerror or e}; needs root outside a container)"
    return None


def filesystem_of(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True,
                             check=True, timeout=10).stdout.splitlines()[-1].split()
        return f"{out[1]} ({out[0]} on {out[-1]})"
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return f"unknown ({e})"


# -- deliveries ----------------------------------------------------------------


class ErrorCounter:
    """
    A log observer counting errors (an unhandled failure in a Deferred is one).
    """

    def __init__(self):
        self.count = 0
        self.first = None

    def __call__(self, event):
        if event.get("log_failure") is not None or event.get("isError"):
            self.count += 1
            if self.first is None:
                failure = event.get("log_failure")
                self.first = (f"{failure.type.__name__}: {failure.value}" if failure
                              else formatEvent(event))


async def deliveries(run, directory: Path, case: str, writers: int, users: int,
                     total: int) -> dict:
    """
    C{writers} coroutines deliver C{total} ~5 KB messages, round-robin over
    C{users} users, each waiting for the previous one to be durable.
    """
    root = directory / case
    store = MaildirStore(root, run)
    addresses = [f"user{n}@{DOMAIN}" for n in range(users)]
    for address in addresses:  # create the Maildirs and load INBOX before timing
        await store.user(address).snapshot(INBOX)
    messages = [make_message(n, 5 * 1024, addresses[n % users]) for n in range(total)]
    latencies: list[float] = []
    sent = Counter(addresses[n % users] for n in range(total))

    async def writer(first: int):
        for n in range(first, total, writers):
            started = time.perf_counter()
            await store.deliver(addresses[n % users], messages[n])
            latencies.append(time.perf_counter() - started)

    logged = ErrorCounter()
    globalLogPublisher.addObserver(logged)
    started = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(writer(w)) for w in range(writers)])
    elapsed = time.perf_counter() - started

    # Check: the folders still answer and give each message its own UID, no
    # error was logged, and a fresh store and the disk agree.
    problems = []
    uids: dict[str, list[int]] = {}
    for address in addresses:
        try:
            snapshot = await store.user(address).snapshot(INBOX).addTimeout(STUCK, reactor)
            uids[address] = [m.uid for m in snapshot.messages]
        except TimeoutError:
            problems.append(f"{address}: INBOX does not answer {STUCK:.0f} s after the "
                            "deliveries (its folder lock was never released)")
            break
    gc.collect()  # an unhandled error in a Deferred is logged when it is collected
    globalLogPublisher.removeObserver(logged)
    if logged.count:
        problems.append(f"{logged.count} errors logged, first: {logged.first}")
    store.close()
    fresh = MaildirStore(root, run)
    for address in addresses:
        given = uids.get(address, [])
        listed = [m.uid for m in (await fresh.user(address).snapshot(INBOX)).messages]
        home = user_directory(root, address)
        files = sum(len(os.listdir(home / sub)) for sub in ("new", "cur"))
        leftovers = len(os.listdir(home / "tmp"))
        if (len(set(given)) != sent[address] or listed != given or files != sent[address]
                or leftovers):
            problems.append(f"{address}: delivered {sent[address]}, {len(set(given))} UIDs, "
                            f"{len(listed)} listed after a restart, {files} files, "
                            f"{leftovers} left in tmp/")
    fresh.close()
    shutil.rmtree(root, ignore_errors=True)
    return {"case": case, "writers": writers, "users": users, "total": total,
            "rate": total / elapsed, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "problems": problems}


# -- opening a large folder ----------------------------------------------------


def reset_folder(home: Path, uidlist: str | None) -> None:
    """
    Remove what mailsrv wrote (its index, the UID list it made); put back
    the migrated Dovecot uidlist when there is one.
    """
    for name in (INDEX, INDEX + "-wal", INDEX + "-shm", dovecot_files.UIDLIST,
                 dovecot_files.LOCK):
        (home / name).unlink(missing_ok=True)
    for path in home.glob("dovecot-uidvalidity*"):
        path.unlink()
    if uidlist is not None:
        (home / dovecot_files.UIDLIST).write_text(uidlist)


async def timed_snapshot(store: MaildirStore, traced: bool) -> tuple[dict, object]:
    """
    Time one snapshot of the big INBOX; with C{traced}, the tracemalloc peak
    and what stays allocated, else RSS before and after and its peak.
    """
    # The reactor holds on to the last result a pool thread handed it (an
    # earlier snapshot) until the next one: hand it an empty one first.
    await store.run(int)
    gc.collect()
    memory = {}
    if traced:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
    else:
        trim_heap()
        reset_peak_rss()
        memory["rss_before"] = proc_status()["VmRSS"]
    started = time.perf_counter()
    snapshot = await store.user(BIG).snapshot(INBOX)
    elapsed = time.perf_counter() - started
    if traced:
        current, peak = tracemalloc.get_traced_memory()
        memory["peak"], memory["held"] = peak - before, current - before
    else:
        status = proc_status()
        memory["rss_after"], memory["hwm"] = status["VmRSS"], status["VmHWM"]
        memory["seconds"] = elapsed
    return memory, snapshot


async def open_folder(run, home: Path, uidlist: str | None, expect: dict, count: int,
                      traced: bool, drop: bool) -> tuple[dict[str, dict], list[str]]:
    """
    The open sequence for one variant: cold (first with the kernel caches
    dropped, if asked and allowed), warm after a restart, warm in the same
    process.  Untraced for times and RSS, or traced for Python memory.
    """
    rows: dict[str, dict] = {}
    problems: list[str] = []
    root = home.parent.parent

    async def measure(step: str, store: MaildirStore) -> None:
        memory, snapshot = await timed_snapshot(store, traced)
        rows[step] = memory
        messages = snapshot.messages
        uids = [m.uid for m in messages]
        seen = sum(1 for m in messages if "\\Seen" in m.flags)
        vsize = sum(m.size for m in messages)
        if (len(messages) != count or uids != expect["uids"] or seen != expect["seen"]
                or vsize != expect["vsize"]):
            problems.append(f"{step}: {len(messages)} messages, {len(set(uids))} UIDs, "
                            f"{seen} seen, {vsize} bytes; expected {count}, {expect['seen']}, "
                            f"{expect['vsize']}")

    if drop:
        reset_folder(home, uidlist)
        reason = drop_caches()
        if reason is None:
            store = MaildirStore(root, run)
            await measure("cold, caches dropped", store)
            store.close()
        else:
            rows["cold, caches dropped"] = {"skipped": reason}
    reset_folder(home, uidlist)
    store = MaildirStore(root, run)
    await measure("cold, caches warm", store)
    store.close()
    store = MaildirStore(root, run)
    await measure("warm-restart", store)
    await measure("warm-in-process", store)
    store.close()
    return rows, problems


async def deliver_into_big(run, home: Path, count: int, total: int) -> dict:
    """
    Deliveries (1 writer) into the big folder once it is open: what each
    one costs when the folder already holds C{count} messages.
    """
    store = MaildirStore(home.parent.parent, run)
    before = await store.user(BIG).snapshot(INBOX)
    latencies = []
    started = time.perf_counter()
    for n in range(total):
        begun = time.perf_counter()
        await store.deliver(BIG, make_message(count + n, 5 * 1024, BIG))
        latencies.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    after = await store.user(BIG).snapshot(INBOX)
    store.close()
    problems = []
    files = sum(len(os.listdir(home / sub)) for sub in ("new", "cur"))
    uids = [m.uid for m in after.messages if m.uid >= before.uidnext]
    if len(uids) != total or len(after.messages) != count + total or files != count + total:
        problems.append(f"into {count}: {len(uids)} new UIDs of {total}, "
                        f"{len(after.messages)} listed, {files} files")
    return {"rate": total / elapsed, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "problems": problems}


# -- the run -------------------------------------------------------------------


def source_state() -> str:
    """
    Which store code ran: the commit, and whether the store has local edits.
    """
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--",
                                "mailsrv/store"], capture_output=True, text=True, check=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    edited = [line[3:] for line in dirty.stdout.splitlines()]
    return head.stdout.strip() + (f" + uncommitted edits to {', '.join(edited)}" if edited
                                  else "")


def print_facts(args, directory: Path) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"machine      {os.cpu_count()} cores, {memory / 2**30:.1f} GiB RAM, "
          f"{platform.system()} {platform.release()}, "
          f"{'root' if os.geteuid() == 0 else 'not root'}")
    print(f"python       {platform.python_implementation()} {platform.python_version()}")
    print(f"temp dir     {directory} on {filesystem_of(directory)}")
    print(f"store        MaildirStore, ThreadPool(maxthreads={args.threads}) "
          f"with deferToThreadPool; code {source_state()}")
    print()


def print_deliveries(rows: list[dict]) -> None:
    print("Durable deliveries (~5 KB each; acknowledged only once fsync'd)")
    print(f"  {'case':<30} {'msgs':>5} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}  check")
    for r in rows:
        check = "ok" if not r["problems"] else "FAILED: " + "; ".join(r["problems"])
        print(f"  {r['case']:<30} {r['total']:>5} {r['rate']:>8.1f} {r['p50'] * 1000:>8.1f} "
              f"{r['p99'] * 1000:>8.1f}  {check}")
    print()


def print_open(variant: str, count: int, timed: dict[str, dict], traced: dict[str, dict],
               problems: list[str]) -> None:
    print(f"Open and list INBOX of {count:,} messages: {variant}")
    print(f"  {'step':<22} {'seconds':>8} {'msgs/s':>9} {'RSS before':>11} {'after':>7} "
          f"{'peak':>7} {'py peak':>8} {'py held':>8} {'B/msg':>6}")
    for step, r in timed.items():
        if "skipped" in r:
            print(f"  {step:<22} skipped: {r['skipped']}")
            continue
        t = traced.get(step)
        py = (f"{t['peak'] / MB:>8.1f} {t['held'] / MB:>8.1f} {t['peak'] / count:>6.0f}"
              if t else f"{'-':>8} {'-':>8} {'-':>6}")
        print(f"  {step:<22} {r['seconds']:>8.3f} {count / r['seconds']:>9,.0f} "
              f"{r['rss_before'] / MB:>8.0f} MB {r['rss_after'] / MB:>4.0f} MB "
              f"{r['hwm'] / MB:>4.0f} MB {py}")
    print("  check: " + ("ok (count, UIDs, \\Seen count, sizes)" if not problems
                         else "FAILED: " + "; ".join(problems)))
    print()


async def run(args):
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-store-", dir=args.dir))
    pool = ThreadPool(minthreads=0, maxthreads=args.threads, name="bench-store")
    pool.start()
    disk = partial(deferToThreadPool, reactor, pool)
    failed = False
    try:
        print_facts(args, directory)

        rows = [await deliveries(disk, directory, "1 writer, 1 user", 1, 1, args.deliveries),
                await deliveries(disk, directory, "50 writers, 1 user", 50, 1,
                                 args.deliveries),
                await deliveries(disk, directory, "50 writers, 50 users", 50, 50,
                                 args.deliveries)]
        print_deliveries(rows)
        failed |= any(r["problems"] for r in rows)

        home = user_directory(directory / "big", BIG)
        started = time.perf_counter()
        bases, expect = fill_folder(home, args.messages)
        os.sync()
        print(f"(wrote {args.messages:,} message files directly in "
              f"{time.perf_counter() - started:.1f} s)\n")
        if args.no_drop_caches:
            print("cold, caches dropped: skipped (--no-drop-caches)\n")
        migrated = uidlist_text(bases, int(time.time()) - 86400)
        variants = [("no uidlist (UIDs assigned on first open)", None,
                     list(range(1, args.messages + 1))),
                    ("Dovecot uidlist present (migrated)", migrated,
                     [int(line.split(" ", 1)[0]) for line in migrated.splitlines()[1:]])]
        # Times and RSS first for both variants, then Python memory under
        # tracemalloc (which slows Python down and leaves RSS behind).
        results = []
        for _, uidlist, uids in variants:
            results.append(await open_folder(disk, home, uidlist, {**expect, "uids": uids},
                                             args.messages, False, not args.no_drop_caches))
        tracemalloc.start()
        try:
            for n, (_, uidlist, uids) in enumerate(variants):
                traced, problems = await open_folder(disk, home, uidlist,
                                                     {**expect, "uids": uids},
                                                     args.messages, True, False)
                results[n] = (results[n][0], traced, results[n][1] + problems)
        finally:
            tracemalloc.stop()
        for (variant, _, _), (timed, traced, problems) in zip(variants, results, strict=True):
            print_open(variant, args.messages, timed, traced, problems)
            failed |= bool(problems)
        print("  RSS: VmRSS before and after the snapshot, and VmHWM reset before it (peak);")
        print("  py peak / held: tracemalloc (a second, traced pass) peak during the snapshot")
        print("  and what is still allocated after it (store state + the snapshot), above")
        print("  the start; B/msg = py peak / messages.\n")

        into = await deliver_into_big(disk, home, args.messages, args.big_deliveries)
        print(f"Deliveries into the open {args.messages:,}-message INBOX (1 writer, "
              f"{args.big_deliveries} msgs): {into['rate']:.1f} msg/s, p50 "
              f"{into['p50'] * 1000:.1f} ms, p99 {into['p99'] * 1000:.1f} ms, check "
              + ("ok" if not into["problems"] else "FAILED: " + "; ".join(into["problems"])))
        failed |= bool(into["problems"])
    finally:
        pool.stop()
        shutil.rmtree(directory, ignore_errors=True)
    if failed:
        print("\nFAILED: the store lost, duplicated or misreported mail, or got stuck "
              "(see above)")
        raise SystemExit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000,
                        help="messages in the large folder (default 100000)")
    parser.add_argument("--deliveries", type=int, default=500,
                        help="deliveries per delivery case (default 500)")
    parser.add_argument("--big-deliveries", type=int, default=20,
                        help="deliveries into the large folder afterwards (default 20)")
    parser.add_argument("--threads", type=int, default=16, help="disk thread pool size")
    parser.add_argument("--dir", default=None, help="where to make the temp dirs")
    parser.add_argument("--no-drop-caches", action="store_true",
                        help="do not try to drop the kernel caches before the cold open")
    args = parser.parse_args()
    if args.messages < 1 or args.deliveries < 50 or args.threads < 1:
        parser.error("need --messages >= 1, --deliveries >= 50, --threads >= 1")
    task.react(lambda _reactor: Deferred.fromCoroutine(run(args)))


if __name__ == "__main__":
    main()
