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
from functools import partial
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailsrv.store import dovecot_files
from mailsrv.store.index import INDEX
from mailsrv.store.interfaces import INBOX
from mailsrv.store.maildir import MaildirStore, user_directory

DOMAIN = "bench.example"
BIG = f"big@{DOMAIN}"
MB = 1024 * 1024
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
    results: list[tuple[str, int, int]] = []

    async def writer(first: int):
        for n in range(first, total, writers):
            address = addresses[n % users]
            started = time.perf_counter()
            result = await store.deliver(address, messages[n])
            latencies.append(time.perf_counter() - started)
            results.append((address, result.uidvalidity, result.uid))

    started = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(writer(w)) for w in range(writers)])
    elapsed = time.perf_counter() - started
    store.close()

    # Check: distinct UIDs, and a fresh store and the disk both hold them all.
    problems = []
    if len(set(results)) != total:
        problems.append(f"{total - len(set(results))} duplicate UIDs")
    fresh = MaildirStore(root, run)
    for address in addresses:
        delivered = {uid for a, _, uid in results if a == address}
        listed = {m.uid for m in (await fresh.user(address).snapshot(INBOX)).messages}
        home = user_directory(root, address)
        files = sum(len(os.listdir(home / sub)) for sub in ("new", "cur"))
        leftovers = len(os.listdir(home / "tmp"))
        if listed != delivered or files != len(delivered) or leftovers:
            problems.append(f"{address}: delivered {len(delivered)}, listed {len(listed)}, "
                            f"{files} files, {leftovers} left in tmp/")
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
                 dovecot_files.LOCK, "dovecot-uidvalidity"):
        (home / name).unlink(missing_ok=True)
    if uidlist is not None:
        (home / dovecot_files.UIDLIST).write_text(uidlist)


async def timed_snapshot(store: MaildirStore, traced: bool) -> tuple[float, dict, object]:
    """
    Time one snapshot of the big INBOX; with C{traced}, the tracemalloc peak
    and what stays allocated, else RSS before and after.
    """
    gc.collect()
    memory = {}
    if traced:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
    else:
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
    return elapsed, memory, snapshot


async def open_folder(run, home: Path, uidlist: str | None, expect: dict, count: int,
                      dropped: bool) -> tuple[list[dict], list[str]]:
    """
    The open sequence for one variant: cold (optionally with caches
    dropped), warm after a restart, warm in the same process; timed once
    untraced, then again under tracemalloc for memory.
    """
    rows: dict[str, dict] = {}
    problems: list[str] = []
    root = home.parent.parent

    def check(step: str, snapshot) -> None:
        messages = snapshot.messages
        uids = [m.uid for m in messages]
        seen = sum(1 for m in messages if "\\Seen" in m.flags)
        vsize = sum(m.size for m in messages)
        if (len(messages) != count or len(set(uids)) != count or uids != sorted(uids)
                or seen != expect["seen"] or vsize != expect["vsize"]
                or (expect["uids"] is not None and uids != expect["uids"])):
            problems.append(f"{step}: {len(messages)} messages, {len(set(uids))} UIDs, "
                            f"{seen} seen, {vsize} bytes; expected {count}, {expect['seen']}, "
                            f"{expect['vsize']}")

    async def sequence(traced: bool, first_cold: bool) -> None:
        reset_folder(home, uidlist)
        steps = []
        if first_cold:
            reason = drop_caches()
            if reason is None:
                steps.append("cold, caches dropped")
            else:
                rows["cold, caches dropped"] = {"skipped": reason}
                reset_folder(home, uidlist)
        if not steps or traced:
            steps.append("cold, caches warm")
        steps += ["warm-restart", "warm-in-process"]
        store = None
        for step in steps:
            if step.startswith("cold"):
                if store is not None:
                    store.close()
                    reset_folder(home, uidlist)
                store = MaildirStore(root, run)
            elif step == "warm-restart":
                store.close()
                store = MaildirStore(root, run)
            elapsed, memory, snapshot = await timed_snapshot(store, traced)
            check(step, snapshot)
            del snapshot
            row = rows.setdefault(step, {})
            if traced:
                row.update(memory)
            else:
                row.update(memory, seconds=elapsed)
        store.close()

    await sequence(traced=False, first_cold=dropped)
    # The untraced pass may have started cold with caches dropped; run the
    # page-cache-warm cold open too, so both columns exist.
    if "cold, caches warm" not in rows:
        reset_folder(home, uidlist)
        store = MaildirStore(root, run)
        elapsed, memory, snapshot = await timed_snapshot(store, False)
        check("cold, caches warm", snapshot)
        del snapshot
        store.close()
        rows["cold, caches warm"] = {**memory, "seconds": elapsed}
    tracemalloc.start()
    try:
        await sequence(traced=True, first_cold=False)
    finally:
        tracemalloc.stop()
    order = ["cold, caches dropped", "cold, caches warm", "warm-restart", "warm-in-process"]
    return [{"step": step, **rows[step]} for step in order if step in rows], problems


async def deliver_into_big(run, home: Path, count: int, total: int) -> dict:
    """
    Deliveries (1 writer) into the big folder once it is open: what each
    one costs when the folder already holds C{count} messages.
    """
    store = MaildirStore(home.parent.parent, run)
    before = await store.user(BIG).snapshot(INBOX)
    latencies, uids = [], []
    started = time.perf_counter()
    for n in range(total):
        begun = time.perf_counter()
        result = await store.deliver(BIG, make_message(count + n, 5 * 1024, BIG))
        latencies.append(time.perf_counter() - begun)
        uids.append(result.uid)
    elapsed = time.perf_counter() - started
    after = await store.user(BIG).snapshot(INBOX)
    store.close()
    problems = []
    files = sum(len(os.listdir(home / sub)) for sub in ("new", "cur"))
    if (len(set(uids)) != total or min(uids) < before.uidnext
            or len(after.messages) != count + total or files != count + total):
        problems.append(f"into {count}: {len(set(uids))} distinct UIDs of {total}, "
                        f"{len(after.messages)} listed, {files} files")
    return {"rate": total / elapsed, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "problems": problems}


# -- the run -------------------------------------------------------------------


def print_facts(args, directory: Path) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"machine      {os.cpu_count()} cores, {memory / 2**30:.1f} GiB RAM, "
          f"{platform.system()} {platform.release()}, "
          f"{'root' if os.geteuid() == 0 else 'not root'}")
    print(f"python       {platform.python_implementation()} {platform.python_version()}")
    print(f"temp dir     {directory} on {filesystem_of(directory)}")
    print(f"store        MaildirStore, ThreadPool(maxthreads={args.threads}) "
          f"with deferToThreadPool")
    print()


def print_deliveries(rows: list[dict]) -> None:
    print("Durable deliveries (~5 KB each; acknowledged only once fsync'd)")
    print(f"  {'case':<30} {'msgs':>5} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8}  check")
    for r in rows:
        check = "ok" if not r["problems"] else "FAILED: " + "; ".join(r["problems"])
        print(f"  {r['case']:<30} {r['total']:>5} {r['rate']:>8.1f} {r['p50'] * 1000:>8.1f} "
              f"{r['p99'] * 1000:>8.1f}  {check}")
    print()


def print_open(variant: str, count: int, rows: list[dict], problems: list[str]) -> None:
    print(f"Open and list INBOX of {count:,} messages: {variant}")
    print(f"  {'step':<22} {'seconds':>8} {'msgs/s':>9} {'RSS before':>11} {'after':>7} "
          f"{'peak':>7} {'py peak':>8} {'py held':>8} {'B/msg':>6}")
    for r in rows:
        if "skipped" in r:
            print(f"  {r['step']:<22} skipped: {r['skipped']}")
            continue
        py = (f"{r['peak'] / MB:>8.1f} {r['held'] / MB:>8.1f} {r['peak'] / count:>6.0f}"
              if "peak" in r else f"{'-':>8} {'-':>8} {'-':>6}")
        print(f"  {r['step']:<22} {r['seconds']:>8.3f} {count / r['seconds']:>9,.0f} "
              f"{r['rss_before'] / MB:>8.0f} MB {r['rss_after'] / MB:>4.0f} MB "
              f"{r['hwm'] / MB:>4.0f} MB {py}")
    print("  check: " + ("ok (count, distinct ascending UIDs, flags, sizes)" if not problems
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
        dropped = not args.no_drop_caches
        if args.no_drop_caches:
            print("cold, caches dropped: skipped (--no-drop-caches)\n")
        migrated = uidlist_text(bases, int(time.time()) - 86400)
        migrated_uids = [int(line.split(" ", 1)[0]) for line in migrated.splitlines()[1:]]
        for variant, uidlist, uids in (
                ("no uidlist (UIDs assigned on first open)", None,
                 list(range(1, args.messages + 1))),
                ("Dovecot uidlist present (migrated)", migrated, migrated_uids)):
            open_rows, problems = await open_folder(disk, home, uidlist,
                                                    {**expect, "uids": uids},
                                                    args.messages, dropped)
            print_open(variant, args.messages, open_rows, problems)
            failed |= bool(problems)

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
        print("\nFAILED: the store lost, duplicated or misreported mail (see above)")
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
