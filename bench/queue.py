"""
Outbound queue throughput: queued-to-delivered messages per second from
mailsrv's queue to a loopback SMTP sink, with all the mail for one
destination domain and spread over 20.

Each case (a number of destinations, in one round) runs in a fresh data
folder:

1. The queue is filled before mailsrv starts, with C{Spool.add} (message,
   envelope, fsyncs, as a submission would leave them), so that only
   delivery is measured: N messages of C{--size} bytes with realistic
   headers, each with its own queue id, arrival now, one recipient due at
   once, from alice@sender.test to userN@destK.test, K round-robin over
   the destinations.
2. A sink (bench/queue_sink.py) is started in a process of its own (no
   shared GIL or event loop with the sender); by default a minimal asyncio
   SMTP server that answers 250 to everything, advertises PIPELINING,
   8BITMIME and SIZE, and records the time of the first MAIL and of each
   final dot.  C{--sink aiosmtpd} takes aiosmtpd instead: on the test
   machine it gave the same msg/s but used about 4 times the CPU per
   message (1 ms against 0.25 ms), which on 2 cores eats into what
   mailsrv's disk threads and the kernel have left.
3. C{twistd -n mailsrv} starts with a generated config: no listeners,
   every destination domain (destK.test) with a static route to the sink
   (C{tls = "none"}; the queue counts connections per domain, so all the
   routes may share the sink's port), and the C{[queue]} limits of
   etc/mailsrv.toml unless C{--max-concurrent}/C{--max-per-destination}
   say otherwise.  At start it recovers the queue and sends everything.
4. The case ends when the sink holds N messages and the queue folder has
   no envelope (C{*.json}) left; then mailsrv and the sink are stopped.

Figures: msg/s = N / (last final dot at the sink - first MAIL at the sink),
which leaves out mailsrv's start-up and its reading of the queue (shown
apart as "start": launch to first MAIL, Python's imports included; "fill"
is the time to fill the queue, not part of any figure).  "gap" is the
longest wait at the sink between two final dots (a stall shows there);
"conns" the most connections open at once.  "empty" runs from the first
MAIL until the queue folder has no envelope left (a delivered message's
files are removed after its 250, with a fsync of the folder).  CPU is
utime + stime from /proc (10 ms ticks) of the mailsrv process (all its
threads) and of the sink, from the first MAIL to the empty queue, per
message; "other" is what the rest of the machine used meanwhile, in % of
one core (others' work disturbs the numbers when it is high).  mailsrv's
CPU is also shown in % of one core: its reactor thread and its disk
threads share one GIL, so near 100% means it is bound by one core
(msg/s then moves with the CPU per message).  Every case
checks that the sink got each message exactly once, that every
destination got its share, and that the queue folder is empty at the end.
C{--profile} adds a py-spy flame graph of mailsrv per case.

Caveats: with the default limits 1 destination gets max_per_destination
(5) connections and 20 destinations get max_concurrent (20), one each;
the sink answers at once, so this is the sender's ceiling, not what real
next hops allow.  mailsrv logs a line per delivery (logging level info),
as it does in production.  The machine has 2 cores: mailsrv, its disk
threads and the sink share them.  On ext4 without a journal (as on the
test machine) creating a file skips inodes of its block group deleted in
the last minutes, one by one: each case's folder gets a block group of
its own (the temp dir is marked C{chattr +T}), and between two runs leave
a few minutes.  Only the filling creates files; delivery only deletes.

    python bench/queue.py                          # 1 and 20 destinations, 2000 msgs
    python bench/queue.py --rounds 3 --messages 2000
    python bench/queue.py --destinations 20 --max-per-destination 1 --keep
    python bench/queue.py --sink aiosmtpd          # the reference sink instead
    python bench/queue.py --messages 10000 --profile   # flame graphs, in the kept temp dir
"""

import argparse
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this folder comes first on sys.path, where this file
# would stand for the standard library's queue module in everything
# imported from now on (Twisted's thread pools, concurrent.futures): put
# the source tree there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path[0] = str(HERE.parent)
else:
    sys.path.insert(0, str(HERE.parent))

from bench.common import (  # noqa: E402
    filesystem_of,
    machine_cpu,
    own_cpu,
    source_state,
    spread_subdirectories,
    stop_process,
    tail,
)
from mailsrv.config import QueueSettings  # noqa: E402
from mailsrv.queue.spool import Envelope, QueuedRecipient, Spool  # noqa: E402
from tests.sourcetree import server_environment, twistd_command  # noqa: E402

SINK = HERE / "queue_sink.py"
SENDER = "alice@sender.test"
#: Seconds for the sink to listen, and for mailsrv to send its first MAIL.
START_TIMEOUT = 60.0
#: Seconds between looks at the queue folder once the sink has everything.
POLL = 0.02
_FILLER = ("The quick brown fox jumps over the lazy dog while the queue carries "
           "every message to its next hop and forgets it. ") * 2


class CaseFailed(Exception):
    """
    A case that could not finish; the message says why.
    """


# -- the queue -----------------------------------------------------------------


def destination(n: int) -> str:
    return f"dest{n}.test"


def build_message(ident: str, recipient: str, size: int) -> bytes:
    """
    A plain-text message of about C{size} bytes (CRLF line ends), as a
    submission leaves it in the queue, with its id in C{X-Bench-Id}.
    """
    head = (f"Received: from [192.0.2.10] (client.sender.test [192.0.2.10])\r\n"
            f"\tby mailsrv.bench.invalid with ESMTPSA id {ident}\r\n"
            f"\tfor <{recipient}>; Mon, 02 Jan 2006 15:04:05 +0000\r\n"
            f"From: Alice Sender <{SENDER}>\r\n"
            f"To: <{recipient}>\r\n"
            f"Subject: Queue benchmark message {ident}\r\n"
            f"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n"
            f"Message-ID: <{ident}@sender.test>\r\n"
            f"X-Bench-Id: {ident}\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n").encode()
    lines = []
    left = size - len(head)
    n = 0
    while left > 2:
        line = _FILLER[n % 60:n % 60 + min(70, left - 2)]
        lines.append(line)
        left -= len(line) + 2
        n += 1
    return head + "".join(line + "\r\n" for line in lines).encode()


def fill_queue(spool: Spool, count: int, destinations: int, size: int) -> None:
    """
    Queue C{count} messages, due now, round-robin over the destinations.
    """
    spool.prepare()
    now = time.time()
    for n in range(count):
        ident = uuid.uuid4().hex[:16].upper()
        recipient = f"user{n}@{destination(n % destinations)}"
        message = build_message(ident, recipient, size)
        spool.add(Envelope(ident, SENDER, now, len(message), [QueuedRecipient(recipient)]),
                  message)


def envelopes_left(path: Path) -> int:
    return sum(name.endswith(".json") for name in os.listdir(path))


def wait_until_empty(path: Path, timeout: float) -> float | None:
    """
    Poll until the queue folder has no envelope; the time then, or None.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not envelopes_left(path):
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL)


def write_config(case: Path, port: int, destinations: int, args) -> Path:
    listeners = "\n".join(f"{role} = []" for role in (
        "smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"))
    routes = "".join(f'\n[queue.routes."{destination(n)}"]\nhost = "127.0.0.1"\n'
                     f'port = {port}\ntls = "none"\n' for n in range(destinations))
    config = case / "mailsrv.toml"
    config.write_text(
        '[server]\nhostname = "mailsrv.bench.invalid"\ndata_dir = "data"\n\n'
        f"[listeners]\n{listeners}\n\n"
        f"[queue]\nmax_concurrent = {args.max_concurrent}\n"
        f"max_per_destination = {args.max_per_destination}\n{routes}")
    return config


# -- processes -----------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """
    CPU seconds (user + system, all threads) used so far by process C{pid}.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(command: list[str], log: Path, stdout=None, **kwargs) -> subprocess.Popen:
    """
    Start C{command} in a session (process group) of its own, its output
    (or only its stderr, given C{stdout}) in C{log}.
    """
    with log.open("ab") as out:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=out,
                                stdout=out if stdout is None else stdout,
                                start_new_session=True, **kwargs)


class Sink:
    """
    bench/queue_sink.py in its own process, and the JSON lines it prints.
    """

    def __init__(self, case: Path, expect: int, implementation: str):
        self.log = case / "sink.log"
        self.process = start([sys.executable, "-P", str(SINK), "--expect", str(expect),
                              "--impl", implementation], self.log, stdout=subprocess.PIPE)
        self._buffer = b""
        self._closed = False
        try:
            self.port = self.wait("port", START_TIMEOUT)
        except BaseException:
            stop_process(self.process)
            raise

    def wait(self, key: str, timeout: float, watched: tuple = ()):
        """
        The value of the next line with C{key}.

        @param watched: C{(name, process, log)}: fail at once if it exits.
        @raise CaseFailed: after C{timeout}, or if a process exits.
        """
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                event = json.loads(line)
                if key in event:
                    return event[key]
            for name, process, log in [*watched, ("the sink", self.process, self.log)]:
                if process.poll() is not None:
                    raise CaseFailed(f"{name} exited with status {process.returncode}: "
                                     + tail(log))
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseFailed(f"no {key!r} from the sink after {timeout:.0f} s")
            self._read(min(left, 0.5))

    def _read(self, timeout: float) -> None:
        if self._closed:
            time.sleep(timeout)
            return
        fd = self.process.stdout.fileno()
        if select.select([fd], [], [], timeout)[0]:
            data = os.read(fd, 1 << 16)
            self._closed = not data
            self._buffer += data

    def stop(self) -> dict | None:
        """
        Stop the sink; its report, if it had not given it yet.
        """
        stop_process(self.process)
        self._buffer += self.process.stdout.read()
        self.process.stdout.close()
        for line in self._buffer.splitlines():
            event = json.loads(line)
            if "report" in event:
                return event["report"]
        return None


# -- a case --------------------------------------------------------------------


def run_case(root: Path, round_: int, destinations: int, args) -> dict:
    """
    Fill a fresh queue, let mailsrv deliver it to the sink, and check.
    """
    row = {"round": round_, "destinations": destinations, "total": args.messages,
           "problems": []}
    case = root / f"round{round_}-{destinations}dest"
    case.mkdir()
    spool = Spool(case / "data" / "queue")
    filling = time.monotonic()
    fill_queue(spool, args.messages, destinations, args.size)
    row["fill"] = time.monotonic() - filling
    sink = mailsrv = profiler = report = None
    log = case / "twistd.log"
    try:
        sink = Sink(case, args.messages, args.sink)
        config = write_config(case, sink.port, destinations, args)
        launched = time.monotonic()
        mailsrv = start(twistd_command("-n", "--pidfile=", f"--logfile={log}", "mailsrv",
                                       "--config", str(config)),
                        case / "stdout.txt", cwd=case, env=server_environment())
        watched = (("mailsrv", mailsrv, log),)
        first = sink.wait("first", START_TIMEOUT, watched)
        before = (process_cpu(mailsrv.pid), process_cpu(sink.process.pid), machine_cpu()[0],
                  own_cpu())
        row["start"] = first - launched
        if args.profile:
            profiler = start([args.py_spy, "record", "--pid", str(mailsrv.pid),
                              "--nonblocking", "--rate", "200",
                              "--output", str(case / "profile.svg")], case / "py-spy.log")
        report = sink.wait("report", args.time_limit, watched)
        emptied = wait_until_empty(spool.path, args.drain_timeout)
        after = (process_cpu(mailsrv.pid), process_cpu(sink.process.pid), machine_cpu()[0],
                 own_cpu())
        if emptied is None:
            row["problems"].append(f"{envelopes_left(spool.path)} envelopes still queued "
                                   f"{args.drain_timeout:.0f} s after the sink had all")
            emptied = time.monotonic()
        mailsrv_cpu, sink_cpu, machine, own = (a - b for a, b in zip(after, before,
                                                                       strict=True))
        row.update(mailsrv_cpu=mailsrv_cpu, sink_cpu=sink_cpu, empty=emptied - first,
                   other=max(0.0, machine - mailsrv_cpu - sink_cpu - own) / (emptied - first))
    except CaseFailed as e:
        row["problems"].append(str(e))
    finally:
        stop_process(profiler, signal.SIGINT)  # py-spy writes its flame graph on SIGINT
        stop_process(mailsrv)
        if sink is not None:
            report = sink.stop() or report
    if report is not None:
        problems, figures = check(report, destinations, args.messages)
        row["problems"] += problems
        row.update(figures)
    row["problems"] += leftovers(spool.path, log)
    return row


def check(report: dict, destinations: int, total: int) -> tuple[list[str], dict]:
    """
    What is wrong with the sink's report, and its figures.
    """
    ends = report["ends"]
    problems = []
    if report["messages"] != total:
        problems.append(f"the sink got {report['messages']} of {total} messages")
    if report["duplicates"] or report["without_id"] or report["distinct"] != len(ends):
        problems.append(f"{report['distinct']} distinct, {report['duplicates']} duplicates, "
                        f"{report['without_id']} without id")
    expected = {destination(n): len(range(n, total, destinations))
                for n in range(destinations)}
    if report["messages"] == total and report["domains"] != expected:
        problems.append(f"per destination: {report['domains']} (expected {expected})")
    figures = {"delivered": len(ends), "max_open": report["max_open"]}
    if ends and ends[-1] > report["first_mail"]:
        figures.update(rate=len(ends) / (ends[-1] - report["first_mail"]),
                       gap=max(b - a for a, b in zip([report["first_mail"], *ends[:-1]], ends,
                                                     strict=True)))
    return problems, figures


def leftovers(queue: Path, log: Path) -> list[str]:
    """
    Files left in the queue folder, and errors in mailsrv's log.
    """
    problems = []
    left = [p.name for p in queue.glob("*") if p.suffix in (".json", ".eml")]
    if left:
        problems.append(f"{len(left)} files left in the queue folder")
    try:
        text = log.read_text("utf-8", "replace")
    except OSError:
        return problems
    errors = text.count("Traceback") + text.count("Unhandled error")
    if errors:
        problems.append(f"{errors} tracebacks in {log.name}")
    return problems


# -- the run -------------------------------------------------------------------


def print_facts(args, directory: Path) -> None:
    print(f"machine      {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    print(f"python       {platform.python_implementation()} {platform.python_version()}; "
          f"mailsrv code {source_state()}")
    print(f"temp dir     {directory} ({filesystem_of(directory)})")
    print(f"queue        {args.messages} messages of {args.size} bytes, 1 recipient each; "
          f"max_concurrent = {args.max_concurrent}, max_per_destination = "
          f"{args.max_per_destination}; static routes, tls none; logging info")
    print(f"sink         {args.sink} (bench/queue_sink.py, its own process)")
    if args.profile:
        print("profile      py-spy records mailsrv at 200 Hz: its CPU counts in 'other'")
    print()


def print_rows(rows: list[dict]) -> None:
    print("Each case (conns: most open at once; start: launch to first MAIL, includes")
    print("reading the queue; msg/s and gap (longest between two messages): at the sink;")
    print("empty: first MAIL to no envelope left; CPU per message from the first MAIL to")
    print("the empty queue, and mailsrv's in % of one core; other: the rest of the machine,")
    print("% of one core)")
    print(f"  {'round':>5} {'dests':>5} {'conns':>5} {'msgs':>5} {'fill s':>6} {'start s':>7} "
          f"{'msg/s':>6} {'gap ms':>6} {'empty s':>7} {'mailsrv CPU':>14} {'sink':>7} "
          f"{'other':>5}  check")
    for r in rows:
        verdict = "ok" if not r["problems"] else "FAILED: " + "; ".join(r["problems"])
        if "rate" not in r or "empty" not in r:
            print(f"  {r['round']:>5} {r['destinations']:>5} {'':>5} {r.get('delivered', 0):>5} "
                  f"{r['fill']:>6.1f}  {verdict}")
            continue
        n = r["delivered"]
        print(f"  {r['round']:>5} {r['destinations']:>5} {r['max_open']:>5} {n:>5} "
              f"{r['fill']:>6.1f} {r['start']:>7.2f} {r['rate']:>6.0f} {r['gap'] * 1000:>6.0f} "
              f"{r['empty']:>7.2f} {r['mailsrv_cpu'] / n * 1000:>5.2f} ms "
              f"{100 * r['mailsrv_cpu'] / r['empty']:>4.0f}% {r['sink_cpu'] / n * 1000:>4.2f} ms "
              f"{100 * r['other']:>4.0f}%  {verdict}")
    print()


def print_medians(rows: list[dict]) -> None:
    print("Medians (min-max of msg/s)")
    print(f"  {'dests':>5} {'msgs':>5} {'msg/s':>6} {'min-max':>11} {'empty s':>7} "
          f"{'CPU/msg':>8} {'rounds':>6}")
    for destinations in dict.fromkeys(r["destinations"] for r in rows):
        same = [r for r in rows if r["destinations"] == destinations and "empty" in r
                and "rate" in r]
        if not same:
            continue
        rates = [r["rate"] for r in same]
        cpu = statistics.median(r["mailsrv_cpu"] / r["delivered"] * 1000 for r in same)
        print(f"  {destinations:>5} {same[0]['total']:>5} {statistics.median(rates):>6.0f} "
              f"{f'{min(rates):.0f}-{max(rates):.0f}':>11} "
              f"{statistics.median(r['empty'] for r in same):>7.2f} {cpu:>5.2f} ms "
              f"{len(same):>6}")
    print("  CPU/msg: mailsrv's CPU (all threads) per message, first MAIL to empty queue")
    print()


def main():
    defaults = QueueSettings()
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--destinations", default="1,20",
                        help="destination domains per case, comma-separated (default 1,20)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per case")
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every case, the order of the cases alternating from "
                             "round to round, and add medians (default 1)")
    parser.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent,
                        help="[queue] max_concurrent (default: mailsrv's, "
                             f"{defaults.max_concurrent})")
    parser.add_argument("--max-per-destination", type=int,
                        default=defaults.max_per_destination,
                        help="[queue] max_per_destination (default: mailsrv's, "
                             f"{defaults.max_per_destination})")
    parser.add_argument("--sink", choices=("minimal", "aiosmtpd"), default="minimal",
                        help="the sink's SMTP server (default minimal)")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="seconds from the first MAIL for all messages to reach the "
                             "sink (default 120)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds after that for the queue folder to empty (default 60)")
    parser.add_argument("--profile", action="store_true",
                        help="record mailsrv with py-spy from the first MAIL to the empty "
                             "queue: a flame graph profile.svg per case in the kept temp dir "
                             "(py-spy's own CPU disturbs the figures)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy")
                        or str(Path(sys.executable).with_name("py-spy")),
                        help="the py-spy program for --profile")
    parser.add_argument("--dir", default=None, help="where to make the temp dir")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (configs, logs) for inspection")
    args = parser.parse_args()
    try:
        args.destinations = [int(x) for x in args.destinations.split(",") if x.strip()]
    except ValueError as e:
        parser.error(f"--destinations: {e}")
    if not args.destinations or min(args.destinations) < 1:
        parser.error("--destinations: positive numbers")
    if args.profile and not Path(args.py_spy).is_file():
        parser.error(f"--profile: no py-spy at {args.py_spy} (pip install py-spy)")
    args.keep |= args.profile
    if (args.messages < 1 or args.size < 1024 or args.rounds < 1 or args.max_concurrent < 1
            or args.max_per_destination < 1):
        parser.error("need --messages, --rounds and the limits >= 1, --size >= 1024")

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-queue-", dir=args.dir))
    spread_subdirectories(directory)
    rows = []
    try:
        print_facts(args, directory)
        for round_ in range(1, args.rounds + 1):
            order = args.destinations if round_ % 2 else args.destinations[::-1]
            for destinations in order:
                rows.append(run_case(directory, round_, destinations, args))
        print_rows(rows)
        if args.rounds > 1:
            print_medians(rows)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if any(r["problems"] for r in rows):
        print("FAILED: a case lost, duplicated or left mail, or was cut short (see above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
