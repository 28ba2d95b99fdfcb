"""
ESMTP delivery throughput: messages per second and p50/p99 latency for
~5 KB messages over 1, 10 and 50 concurrent connections, each connection
reused (EHLO once, then MAIL FROM / RCPT TO / DATA / RSET per message),
into a Maildir, for mailsrv and two reference servers measured by the same
client in the same run:

- mailsrv (C{twistd -n mailsrv}): acknowledges once the message is durable
  in the Maildir (file and directory fsync'd);
- Postfix (Debian's C{postfix}), a private instance delivering to Maildir
  with virtual(8): acknowledges once its own queue file is fsync'd, and
  delivers afterwards, so the time to drain its queue into the Maildir is
  measured too;
- aiosmtpd (PyPI), a handler that writes tmp/, fsyncs, renames into new/
  and fsyncs new/ before its 250 (bench/smtp_reference/aiosmtpd_maildir.py).

Every server runs in its own process(es) on a free port of 127.0.0.1, all
its state in one temp dir that is removed at the end; nothing touches the
system's mail setup (Postfix needs root: it is skipped otherwise).  After
each case the target Maildir must hold exactly the messages that got a 250,
each once and whole (checked by a unique header and a closing line).

Every server's files live in a block group of their own (the temp dir is
marked C{chattr +T}).  On ext4 without a journal, as on the 2-core test
machine, creating a file skips every inode of its group deleted in the last
1 to 5 minutes, one by one: without the split, the queue files Postfix
deletes after each delivery made file creation slower for the servers
measured after it.  For the same reason, leave a few minutes between two
runs (the end of a run deletes its temp dir).

    python bench/smtp.py                                   # all, 1/10/50 connections
    python bench/smtp.py --servers postfix,aiosmtpd --concurrency 10,50
    python bench/smtp.py --messages 5000 --size 5120 --dir /var/tmp
    python bench/smtp.py --rounds 5          # each case 5 times, interleaved; medians
                                             # and who won each round

Needs: C{pip install '.[bench]'} (aiosmtpd), and for Postfix, as root,
C{echo "postfix postfix/main_mailer_type select No configuration" |
debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y
postfix} (no system instance is configured or started).
"""

import argparse
import asyncio
import grp
import importlib.metadata
import importlib.util
import math
import os
import platform
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import (  # noqa: E402
    STOP_TIMEOUT,
    filesystem_of,
    free_port,
    kill_group,
    machine_cpu,
    own_cpu,
    run_command,
    source_state,
    spread_subdirectories,
    stop_process,
    tail,
)
from tests.sourcetree import server_environment, twistd_command  # noqa: E402

REFERENCE = HERE / "smtp_reference"
DOMAIN = "bench.example"
RECIPIENT = f"bench@{DOMAIN}"
SENDER = "sender@example.net"
SERVERS = ("mailsrv", "postfix", "aiosmtpd")
#: Seconds a server has to greet after it is started.
START_TIMEOUT = 60.0
#: Seconds to open and EHLO all connections of a case.
CONNECT_TIMEOUT = 30.0
#: Seconds past the case's time limit before the client closes every
#: connection (a server that stopped answering).
GRACE = 30.0
END_MARK = "-- end of benchmark message"
_BENCH_ID = re.compile(rb"^X-Bench-Id: (\S+)", re.MULTILINE)
_FILLER = ("The quick brown fox jumps over the lazy dog while the mail server "
           "keeps every message durable on disk before it says yes. ") * 2


class Unavailable(Exception):
    """
    A server that cannot be measured in this run; the message says why.
    """


# -- messages ------------------------------------------------------------------


class Messages:
    """
    RFC 5322 messages of exactly C{size} bytes (CRLF line ends, before the
    final dot), each with its id in an C{X-Bench-Id} header and in a
    closing line, so that a stored copy can be matched and seen whole.
    No line starts with a dot, so none needs dot-stuffing.
    """

    def __init__(self, size: int):
        self.size = size
        self._fillers: dict[int, bytes] = {}

    def build(self, ident: str) -> bytes:
        """
        The message and the terminating C{.CRLF}, ready to send after 354.
        """
        head = (f"From: Bench Sender <{SENDER}>\r\n"
                f"To: <{RECIPIENT}>\r\n"
                f"Subject: SMTP benchmark message {ident}\r\n"
                f"Date: Mon, 02 Jan 2006 15:04:05 +0000\r\n"
                f"Message-ID: <{ident}@bench.invalid>\r\n"
                f"X-Bench-Id: {ident}\r\n"
                f"MIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
        tail = f"{END_MARK} {ident} --\r\n".encode()
        need = self.size - len(head) - len(tail)
        filler = self._fillers.get(need)
        if filler is None:
            filler = self._fillers[need] = self._filler(need)
        return head + filler + tail + b".\r\n"

    @staticmethod
    def _filler(need: int) -> bytes:
        """
        C{need} bytes of 72-byte text lines (one longer line takes up the rest).
        """
        if need <= 0:
            return b""
        count, rest = divmod(need, 72)
        lines = [_FILLER[n % 60:n % 60 + 70] for n in range(count)]
        if rest >= 3:
            lines.append(_FILLER[:rest - 2])
        elif rest and lines:
            lines[0] = _FILLER[:70 + rest]
        return "".join(line + "\r\n" for line in lines).encode()


# -- the load client -----------------------------------------------------------


class ProtocolError(Exception):
    pass


def read_reply_blocking(stream) -> tuple[int, bytes, list[bytes]]:
    """
    One reply from a blocking socket file: code, last line, all lines.
    """
    lines = []
    while True:
        line = stream.readline(4096)
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        return int(line[:3]), line, lines
    except ValueError:
        raise ProtocolError(f"not an SMTP reply: {line[:60]!r}") from None


class Load:
    """
    What the connections of one case share: the messages still to send,
    what came back, and the deadline.
    """

    def __init__(self, tag: str, total: int, messages: Messages, pipelining: bool,
                 deadline: float):
        self.tag = tag
        self.total = total
        self.messages = messages
        self.pipelining = pipelining
        self.deadline = deadline
        self.next = 0
        self.acked: list[str] = []
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.timed_out = False

    def take(self) -> str | None:
        if self.next >= self.total:
            return None
        if time.perf_counter() > self.deadline:
            self.timed_out = True
            return None
        self.next += 1
        return f"{self.tag}-{self.next}"

    def fail(self, stage: str, line: bytes) -> None:
        self.failures[f"{stage}: {line.decode('ascii', 'replace').strip()[:70]}"] += 1


MAIL = f"MAIL FROM:<{SENDER}>\r\n".encode()
RCPT = f"RCPT TO:<{RECIPIENT}>\r\n".encode()
#: A connection gives up after this many failed transactions in a row.
GIVE_UP = 10


class Client(asyncio.Protocol):
    """
    One client connection, as a callback state machine (no coroutine per
    reply, so that the client costs little CPU): greeting, EHLO, then on
    L{start} transactions until the case's messages are all taken, RSET
    between them.  The latency runs from MAIL FROM sent to the reply to
    the final dot.  With pipelining, RSET (after the first), MAIL, RCPT
    and DATA go in one write (RFC 2920: DATA ends a group), else one
    command at a time.
    """

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()   # greeted and EHLO answered
        self.done = loop.create_future()    # no more messages, or the connection failed
        self.transport = None
        self.buffer = b""
        self.state = "greeting"
        self.load: Load | None = None
        self.quit_reply = None

    # -- the wire

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                return
            line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
            if line[3:4] == b"-":
                continue
            try:
                code = int(line[:3])
            except ValueError:
                self.broken(ProtocolError(f"not an SMTP reply: {line[:60]!r}"))
                return
            self.reply(code, line)

    def connection_lost(self, exc):
        self.broken(ConnectionError(f"closed by the server ({exc})" if exc else
                                    "closed by the server"))

    def broken(self, error: Exception) -> None:
        for future in (self.ready, self.done, self.quit_reply):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: no "never retrieved" warning
        if self.transport is not None:
            self.transport.abort()

    # -- the conversation

    def reply(self, code: int, line: bytes) -> None:
        if self.state == "run":
            self.transaction_reply(code, line)
        elif self.state == "greeting":
            if code != 220:
                return self.broken(ProtocolError(f"greeting: {line.strip().decode()}"))
            self.state = "ehlo"
            self.transport.write(b"EHLO client.bench.invalid\r\n")
        elif self.state == "ehlo":
            if code != 250:
                return self.broken(ProtocolError(f"EHLO: {line.strip().decode()}"))
            self.state = "idle"
            self.ready.set_result(None)
        elif self.state == "quit":
            if not self.quit_reply.done():
                self.quit_reply.set_result(code)
        # else: a reply nobody asked for (e.g. 421 on a timeout): ignored

    def start(self, load: Load) -> None:
        self.load = load
        self.state = "run"
        self.first = True
        self.failures_in_row = 0
        self.next_message()

    def next_message(self) -> None:
        load = self.load
        if self.failures_in_row >= GIVE_UP:
            load.failures[f"connection gave up after {GIVE_UP} failed transactions "
                          f"in a row"] += 1
            return self.finish()
        ident = load.take()
        if ident is None:
            return self.finish()
        self.ident = ident
        self.failed = False
        self.data_ok = False
        if load.pipelining:
            stages = [("MAIL", 250), ("RCPT", 250), ("DATA", 354)]
            if not self.first:
                stages.insert(0, ("RSET", 250))
            groups = [((b"" if self.first else b"RSET\r\n") + MAIL + RCPT + b"DATA\r\n",
                       stages, True)]
        else:
            groups = [] if self.first else [(b"RSET\r\n", [("RSET", 250)], False)]
            groups += [(MAIL, [("MAIL", 250)], True), (RCPT, [("RCPT", 250)], False),
                       (b"DATA\r\n", [("DATA", 354)], False)]
        self.first = False
        self.groups = groups
        self.send_group()

    def send_group(self) -> None:
        data, expect, clock = self.groups.pop(0)
        self.expect = expect
        if clock:
            self.started = time.perf_counter()
        self.transport.write(data)

    def transaction_reply(self, code: int, line: bytes) -> None:
        if not self.expect:
            return  # unasked for
        stage, wanted = self.expect.pop(0)
        if code != wanted:
            self.load.fail(stage, line)
            if stage != "RSET":
                self.failed = True
        if stage == "DATA":
            self.data_ok = code == 354
        if self.expect:
            return  # more replies to come for this group
        if stage == "end of data":
            if code == 250:
                self.load.latencies.append(time.perf_counter() - self.started)
                self.load.acked.append(self.ident)
                self.failures_in_row = 0
            else:
                self.failures_in_row += 1
            return self.next_message()
        if stage == "DATA" or self.failed:
            if not self.data_ok:
                self.failures_in_row += 1
                return self.next_message()
            # The server is reading the message (even if an earlier reply
            # was a refusal): send it, and its 250 counts.
            self.groups = [(self.load.messages.build(self.ident),
                            [("end of data", 250)], False)]
        self.send_group()

    def finish(self) -> None:
        self.state = "idle"
        if not self.done.done():
            self.done.set_result(None)

    async def quit(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.state = "quit"
        self.quit_reply = asyncio.get_running_loop().create_future()
        self.transport.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(self.quit_reply, 5)
        except (TimeoutError, ConnectionError, ProtocolError):
            pass
        self.transport.close()


async def open_client(port: int) -> Client:
    """
    Connect, read the greeting, EHLO: the connection, ready for mail.
    """
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Client, "127.0.0.1", port)
    try:
        await client.ready
    except BaseException:
        client.transport.abort()
        raise
    return client


async def run_load(port: int, connections: int, total: int, messages: Messages,
                   pipelining: bool, tag: str, time_limit: float, on_start=None) -> dict:
    """
    One case: open C{connections} sessions (not timed), then send C{total}
    messages through them and time that.  C{on_start} is called just
    before the clock starts (to sample CPU counters).
    """
    problems = []
    opened = await asyncio.gather(
        *(asyncio.wait_for(open_client(port), CONNECT_TIMEOUT) for _ in range(connections)),
        return_exceptions=True)
    clients = [c for c in opened if not isinstance(c, BaseException)]
    errors = Counter(f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException))
    if errors:
        problems.append(f"opened {len(clients)} of {connections} connections ("
                        + "; ".join(f"{n}x {e}" for e, n in errors.items()) + ")")
    if on_start is not None:
        on_start()
    cpu_started = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    load = Load(tag, total, messages, pipelining, started + time_limit)
    loop = asyncio.get_running_loop()

    def abort():
        problems.append(f"the server stopped answering: connections closed "
                        f"{time_limit + GRACE:.0f} s into the case")
        for client in clients:
            client.transport.abort()

    watchdog = loop.call_later(time_limit + GRACE, abort)
    for client in clients:
        client.start(load)
    try:
        results = await asyncio.gather(*(c.done for c in clients), return_exceptions=True)
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - started
    cpu_ended = resource.getrusage(resource.RUSAGE_SELF)
    lost = Counter(f"{type(e).__name__}: {e}"[:90] for e in results
                   if isinstance(e, BaseException))
    if lost:
        problems.append("connections lost: " + "; ".join(f"{n}x {e}" for e, n in lost.items()))
    await asyncio.gather(*(c.quit() for c in clients))
    if load.failures:
        problems.append("refused: " + "; ".join(f"{n}x {e}" for e, n in load.failures.items()))
    if load.timed_out:
        problems.append(f"time limit ({time_limit:.0f} s) reached after "
                        f"{len(load.acked)} messages")
    client_cpu = (cpu_ended.ru_utime - cpu_started.ru_utime
                  + cpu_ended.ru_stime - cpu_started.ru_stime)
    return {"acked": load.acked, "latencies": load.latencies, "elapsed": elapsed,
            "client_cpu": client_cpu, "problems": problems}


def probe_extensions(port: int) -> set[str]:
    """
    The EHLO keywords a server advertises.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        read_reply_blocking(stream)
        stream.write(b"EHLO probe.bench.invalid\r\n")
        stream.flush()
        code, _, lines = read_reply_blocking(stream)
        stream.write(b"QUIT\r\n")
        stream.flush()
        try:
            read_reply_blocking(stream)
        except (OSError, ProtocolError):
            pass
    if code != 250:
        return set()
    return {line[4:].split()[0].decode("ascii", "replace").upper()
            for line in lines[1:] if line[4:].split()}


# -- the Maildir check ---------------------------------------------------------


class Mailbox:
    """
    The Maildir a server delivers the benchmark's mail to; remembers which
    files it has already accounted for.
    """

    def __init__(self, path: Path):
        self.path = path
        self.known: set[str] = set()

    def names(self) -> set[str]:
        found = set()
        for sub in ("new", "cur"):
            try:
                found.update(f"{sub}/{name}" for name in os.listdir(self.path / sub))
            except FileNotFoundError:
                pass
        return found

    def count(self) -> int:
        return len(self.names())

    def in_tmp(self) -> int:
        try:
            return len(os.listdir(self.path / "tmp"))
        except FileNotFoundError:
            return 0

    def wait_for(self, expected: int, timeout: float) -> float | None:
        """
        Wait until new/ + cur/ hold C{expected} more files than accounted
        for; the seconds it took, or None after C{timeout}.
        """
        started = time.perf_counter()
        target = len(self.known) + expected
        if self.count() >= target:
            return 0.0
        while True:
            if self.count() >= target:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                return None
            # Listing a big new/ costs a millisecond or two: poll gently, not
            # to slow down the delivery being waited for.
            time.sleep(0.02)

    def verify(self, acked: list[str]) -> tuple[int, list[str]]:
        """
        Account for the files that arrived since the last call: exactly
        one whole copy of each acknowledged message, nothing else.

        @return: how many acknowledged messages are there, and the problems.
        """
        names = self.names()
        fresh = sorted(names - self.known)
        self.known = names
        found: Counter[str] = Counter()
        unreadable = truncated = 0
        for name in fresh:
            try:
                data = (self.path / name).read_bytes()
            except OSError:
                unreadable += 1
                continue
            match = _BENCH_ID.search(data)
            if match is None:
                unreadable += 1
                continue
            ident = match.group(1).decode("ascii", "replace")
            found[ident] += 1
            if not data.rstrip().endswith(f"{END_MARK} {ident} --".encode()):
                truncated += 1
        wanted = set(acked)
        missing = len(wanted - set(found))
        extra = sum(n for ident, n in found.items() if ident not in wanted)
        duplicates = sum(n - 1 for n in found.values() if n > 1)
        problems = []
        if len(fresh) != len(acked):
            problems.append(f"{len(fresh)} new files in new/+cur/ for {len(acked)} acknowledged")
        for count, what in ((missing, "acknowledged but missing"),
                            (extra, "stored but never acknowledged"),
                            (duplicates, "duplicate copies"), (truncated, "truncated"),
                            (unreadable, "without the benchmark's id"),
                            (self.in_tmp(), "left in tmp/")):
            if count:
                problems.append(f"{count} {what}")
        return len(wanted & set(found)), problems


# -- CPU accounting ------------------------------------------------------------


def process_tree_cpu(root: int) -> float:
    """
    CPU seconds used so far by process C{root} and all its descendants,
    including the children they have already reaped.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / ticks


# -- the servers ---------------------------------------------------------------


def wait_for_greeting(port: int, process: subprocess.Popen, timeout: float,
                      log: Path) -> bytes:
    """
    Poll until the server on C{port} greets; its greeting line.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"exited with status {process.returncode} while starting: "
                              + tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                stream = sock.makefile("rwb")
                _, line, _ = read_reply_blocking(stream)
                try:
                    stream.write(b"QUIT\r\n")
                    stream.flush()
                    read_reply_blocking(stream)
                except (OSError, ProtocolError):
                    pass
                return line
        except (OSError, ProtocolError):
            time.sleep(0.02)
    raise Unavailable(f"no greeting on port {port} after {timeout:.0f} s: " + tail(log))


class Server:
    """
    A server under test: started in its own session in C{directory}, all its
    state there; C{mailbox} is the Maildir the benchmark's mail lands in.
    """

    name = ""
    #: Whether its 250 means the message is already in the Maildir (so the
    #: Maildir must hold every acknowledged message the moment a case ends).
    acks_when_delivered = True

    def __init__(self, root: Path, args):
        self.directory = root / self.name
        self.directory.mkdir()
        self.args = args
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.mailbox: Mailbox | None = None
        self.unavailable: str | None = None
        self.startup: float | None = None
        self.greeting = b""
        self.notes: list[str] = []
        self.extensions: set[str] = set()

    def start(self) -> None:
        try:
            self.launch()
            self.check_greeting()
        except Unavailable as e:
            self.unavailable = str(e)
            self.stop()
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        raise NotImplementedError

    def check_greeting(self) -> None:
        if not self.greeting.startswith(b"220"):
            raise Unavailable("greets " + self.greeting.decode("ascii", "replace").strip())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_root(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)

    def popen(self, command: list[str], log: Path, **kwargs) -> None:
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True, **kwargs)


class Mailsrv(Server):
    """
    C{twistd -n --pidfile= mailsrv --config CONFIG} with a generated config,
    from this source tree.
    """

    name = "mailsrv"

    def launch(self) -> None:
        self.port = free_port()
        config = self.directory / "mailsrv.toml"
        listeners = "\n".join(f"{role} = []" for role in (
            "submission", "submissions", "imap", "imaps", "pop3", "pop3s"))
        config.write_text(
            '[server]\nhostname = "mailsrv.bench.invalid"\ndata_dir = "data"\n\n'
            f'[listeners]\nsmtp = ["tcp:{self.port}:interface=127.0.0.1"]\n{listeners}\n\n'
            f'[domains."{DOMAIN}"]\n\n'
            # The default (20 per address) would refuse most of 50 connections
            # from 127.0.0.1.
            "[limits]\nmax_connections_per_ip = 10000\nmax_connections = 10000\n")
        self.notes.append("config: max_connections_per_ip and max_connections = 10000 "
                          "(default 20 per address refuses 50 loopback connections)")
        self.mailbox = Mailbox(self.directory / "data" / "mail" / DOMAIN / "bench")
        env = server_environment()
        started = time.perf_counter()
        try:
            added = subprocess.run(
                [sys.executable, "-m", "mailsrv.cli", "--config", str(config), "user", "add",
                 RECIPIENT], input="bench-password\n", capture_output=True, text=True,
                env=env, cwd=self.directory, timeout=120)
        except subprocess.TimeoutExpired:
            raise Unavailable("`mailsrv user add` did not finish in 120 s") from None
        if added.returncode != 0:
            raise Unavailable("`mailsrv user add` failed: "
                              + (added.stderr or added.stdout).strip()[-200:])
        self.notes.append(f"user add: {time.perf_counter() - started:.2f} s")
        log = self.directory / "twistd.log"
        started = time.perf_counter()
        self.popen(twistd_command("-n", "--pidfile=", f"--logfile={log}", "mailsrv",
                                  "--config", str(config)),
                   log.with_name("stdout.txt"), cwd=self.directory, env=env)
        self.greeting = wait_for_greeting(self.port, self.process, START_TIMEOUT, log)
        self.startup = time.perf_counter() - started

    def check_greeting(self) -> None:
        if self.greeting.startswith(b"421"):
            raise Unavailable("SMTP not served yet (greets "
                              + self.greeting.decode("ascii", "replace").strip() + ")")
        super().check_greeting()


class Postfix(Server):
    """
    A private Postfix instance (C{postfix -c DIR start-fg}): own config,
    queue and data directories, smtpd on 127.0.0.1:PORT only, mail for the
    test domain delivered by virtual(8) to DIR/mail/bench.example/bench/.
    """

    name = "postfix"
    acks_when_delivered = False
    POSTFIX = "/usr/sbin/postfix"

    def launch(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("a Postfix instance must be started as root")
        if not Path(self.POSTFIX).exists():
            raise Unavailable("Debian's postfix package is not installed")
        try:
            pwd.getpwnam("postfix")
            grp.getgrnam("postdrop")
        except KeyError:
            raise Unavailable("no postfix user or postdrop group (install Debian's "
                              "postfix package)") from None
        owner = pwd.getpwnam("nobody")
        self.port = free_port()
        root = self.directory
        paths = {name: root / name for name in ("config", "queue", "data", "mail")}
        for path in paths.values():
            path.mkdir(mode=0o755)
        shutil.chown(paths["data"], "postfix")
        os.chown(paths["mail"], owner.pw_uid, owner.pw_gid)
        self.config = paths["config"]
        self.log = root / "postfix.log"
        settings = {
            "root": root, "config": paths["config"], "queue": paths["queue"],
            "data": paths["data"], "mail": paths["mail"], "log": self.log, "domain": DOMAIN,
            "uid": owner.pw_uid, "gid": owner.pw_gid,
            "process_limit": max(100, 2 * max(self.args.concurrency) + 20)}
        main_cf = (REFERENCE / "postfix-main.cf").read_text().format(**settings)
        if self.args.postfix_option:
            main_cf += "\n# --postfix-option\n" + "\n".join(
                " = ".join(part.strip() for part in option.split("=", 1))
                for option in self.args.postfix_option) + "\n"
            self.notes.append("--postfix-option: " + ", ".join(self.args.postfix_option))
        (paths["config"] / "main.cf").write_text(main_cf)
        (paths["config"] / "master.cf").write_text(
            (REFERENCE / "postfix-master.cf").read_text().format(
                port=self.port, port_spec=f"127.0.0.1:{self.port}"))
        (paths["config"] / "vmailbox").write_text(f"{RECIPIENT} {DOMAIN}/bench/\n")
        self.mailbox = Mailbox(paths["mail"] / DOMAIN / "bench")
        started = time.perf_counter()
        self.popen([self.POSTFIX, "-c", str(self.config), "start-fg"], root / "start.txt")
        self.greeting = wait_for_greeting(self.port, self.process, START_TIMEOUT,
                                          root / "start.txt")
        self.startup = time.perf_counter() - started
        values = subprocess.run(
            ["/usr/sbin/postconf", "-c", str(self.config), "-x", "-h", "in_flow_delay",
             "default_process_limit", "smtpd_client_connection_count_limit",
             "virtual_destination_concurrency_limit"],
            capture_output=True, text=True, timeout=30).stdout.split()
        self.notes.append("in_flow_delay={}, default_process_limit={}, "
                          "smtpd_client_connection_count_limit={}, "
                          "virtual_destination_concurrency_limit={}".format(*values)
                          if len(values) == 4 else "postconf failed")

    def queued(self) -> int:
        """
        Messages still in Postfix's queue.
        """
        total = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(self.directory / "queue" / sub):
                total += len(files)
        return total

    def stop(self) -> None:
        if self.process is None:
            return
        pid_file = self.directory / "queue" / "pid" / "master.pid"
        try:
            master = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            master = None
        if self.process.poll() is None:
            try:
                subprocess.run([self.POSTFIX, "-c", str(self.config), "stop"],
                               capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                pass
        # The master leads its own process group; its children should follow
        # it out at once, and are killed if they do not.
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if master is not None:
                    os.killpg(master, 0)
                elif self.process.poll() is None:
                    os.killpg(self.process.pid, 0)
                else:
                    break
            except ProcessLookupError:
                break
            time.sleep(0.05)
        if master is not None:
            kill_group(master)
        stop_process(self.process)


class Aiosmtpd(Server):
    """
    bench/smtp_reference/aiosmtpd_maildir.py in its own process.
    """

    name = "aiosmtpd"

    def launch(self) -> None:
        if importlib.util.find_spec("aiosmtpd") is None:
            raise Unavailable(f"aiosmtpd is not installed for {sys.executable} "
                              "(pip install aiosmtpd)")
        self.port = free_port()
        maildir = self.directory / "mail" / DOMAIN / "bench"
        self.mailbox = Mailbox(maildir)
        log = self.directory / "aiosmtpd.log"
        started = time.perf_counter()
        self.popen([sys.executable, str(REFERENCE / "aiosmtpd_maildir.py"),
                    "--port", str(self.port), "--maildir", str(maildir), "--domain", DOMAIN,
                    "--writes", self.args.aiosmtpd_writes], log)
        self.greeting = wait_for_greeting(self.port, self.process, START_TIMEOUT, log)
        self.startup = time.perf_counter() - started
        self.notes.append(f"Maildir writes: {self.args.aiosmtpd_writes}"
                          + (" (16-thread pool)" if self.args.aiosmtpd_writes == "thread"
                             else " (on the event loop)"))


# -- a case --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_case(server: Server, connections: int, total: int, messages: Messages,
             pipelining: bool, args, tag: str) -> dict:
    """
    Send C{total} messages over C{connections}, wait until the Maildir holds
    them, and check every one.
    """
    row = {"server": server.name, "connections": connections, "total": total}
    if server.unavailable is not None:
        return {**row, "unavailable": server.unavailable}
    if not server.alive():
        server.unavailable = "the server process has exited"
        return {**row, "unavailable": server.unavailable}
    samples = {}

    def sample_start():
        samples["server"] = process_tree_cpu(server.cpu_root())
        samples["client"] = own_cpu()
        samples["machine"] = machine_cpu()

    result = asyncio.run(run_load(server.port, connections, total, messages, pipelining,
                                  tag, args.time_limit, sample_start))
    acked = result["acked"]
    drain = server.mailbox.wait_for(len(acked), args.drain_timeout)
    server_cpu = process_tree_cpu(server.cpu_root()) - samples["server"]
    busy, steal = (now - then for now, then in zip(machine_cpu(), samples["machine"],
                                                   strict=True))
    # Everything else the machine did meanwhile: other processes, kernel
    # threads (the file system's journal, writeback), interrupts.
    other = busy - server_cpu - (own_cpu() - samples["client"])
    problems = list(result["problems"])
    if server.acks_when_delivered and drain:
        problems.append("acknowledged before the message was in the Maildir "
                        f"(the last arrived {drain:.2f} s after the case ended)")
    if drain is None:
        drain = args.drain_timeout
        still = f", {server.queued()} still queued" if isinstance(server, Postfix) else ""
        problems.append(f"not all in the Maildir after {args.drain_timeout:.0f} s{still}")
    verified, found_problems = server.mailbox.verify(acked)
    problems += found_problems
    elapsed = result["elapsed"]
    latencies = result["latencies"] or [float("nan")]
    return {**row, "acked": len(acked), "elapsed": elapsed,
            "rate": len(acked) / elapsed if elapsed else 0.0,
            "p50": statistics.median(latencies), "p99": percentile(latencies, 0.99),
            "drain": drain, "delivered_rate": len(acked) / (elapsed + drain),
            "verified": verified, "client_cpu": result["client_cpu"],
            "server_cpu": server_cpu, "other_cpu": max(0.0, other), "steal": steal,
            "problems": problems}


# -- the run -------------------------------------------------------------------


def listening_on_25() -> list[str]:
    """
    Local TCP listeners on port 25 (the system's MTA, if any: never ours).
    """
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port, 16) == 25:
                found.append(f"{table.rsplit('/', 1)[1]} {address}")
    return found


def print_facts(args, directory: Path) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    print(f"machine      {os.cpu_count()} cores ({model or 'unknown CPU'}), "
          f"{memory / 2**30:.1f} GiB RAM, {platform.system()} {platform.release()}, "
          f"{'root' if os.geteuid() == 0 else 'not root'}")
    print(f"python       {platform.python_implementation()} {platform.python_version()}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start "
          "(other work on the machine disturbs the numbers: see the other column)")
    print(f"temp dir     {directory} on {filesystem_of(directory)}")
    versions = []
    for name in ("twisted", "aiosmtpd"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    postfix = run_command(["/usr/sbin/postconf", "-d", "-h", "mail_version"])
    versions.append(f"postfix {postfix}" if postfix else "postfix not installed")
    print(f"software     {', '.join(versions)}; mailsrv code {source_state()}")
    print(f"message      {args.size} bytes, 1 recipient, from {SENDER} to {RECIPIENT}")
    print()


#: Other work on the machine during a case (% of one core) above which
#: the case is flagged as disturbed.
NOISY = 25


def print_rows(rows: list[dict], pipelining: bool, rounds: int) -> None:
    mode = ("pipelined (RSET+MAIL+RCPT+DATA in one write)" if pipelining
            else "one command at a time")
    print(f"Deliveries into a Maildir, connections reused, RSET between messages; {mode}")
    print(f"  {'round ' if rounds > 1 else ''}"
          f"{'server':<9} {'conns':>5} {'msgs':>5} {'msg/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'drain s':>7} {'e2e/s':>6} {'client':>6} {'server':>6} {'other':>5} {'steal':>5}"
          f"  in Maildir")
    noisy = []
    for r in rows:
        first = f"{r['round']:>5} " if rounds > 1 else ""
        if "unavailable" in r:
            print(f"  {first}{r['server']:<9} {r['connections']:>5}  "
                  f"{r['server']}: {r['unavailable']}")
            continue
        check = (f"{r['verified']}/{r['acked']} ok" if not r["problems"]
                 else f"{r['verified']}/{r['acked']} FAILED: " + "; ".join(r["problems"]))
        window = r["elapsed"] + r["drain"]
        other = 100 * r["other_cpu"] / window
        if other > NOISY:
            noisy.append(f"{r['server']} at {r['connections']}"
                         + (f" (round {r['round']})" if rounds > 1 else ""))
        print(f"  {first}{r['server']:<9} {r['connections']:>5} {r['acked']:>5} {r['rate']:>6.0f} "
              f"{r['p50'] * 1000:>7.1f} {r['p99'] * 1000:>7.1f} {r['drain']:>7.2f} "
              f"{r['delivered_rate']:>6.0f} {100 * r['client_cpu'] / r['elapsed']:>5.0f}% "
              f"{100 * r['server_cpu'] / window:>5.0f}% {other:>4.0f}% "
              f"{100 * r['steal'] / window:>4.0f}%  {check}")
    print("  msg/s: 250s received per second (the clock runs from the first MAIL FROM to the")
    print("  last reply; connecting and EHLO are not timed); p50/p99: MAIL FROM sent to the")
    print("  250 after the final dot; drain: from the last 250 until new/ + cur/ held every")
    print("  acknowledged message (Postfix delivers after its 250, the others before it);")
    print("  e2e/s: messages / (time + drain).  CPU as % of one core: client (this process,")
    print("  timed part), server (all its processes, time + drain), other (the rest of the")
    print("  machine meanwhile: other processes, kernel threads, interrupts), steal (taken by")
    print(f"  the hypervisor); the machine has {os.cpu_count()} cores.  in Maildir: acknowledged")
    print("  messages found exactly once and whole.")
    measured = [r for r in rows if r.get("acked")]
    if measured:
        cpu = sum(r["client_cpu"] for r in measured)
        count = sum(r["acked"] for r in measured)
        print(f"  client CPU in all: {cpu:.2f} s for {count} messages "
              f"({cpu / count * 1e6:.0f} us per message, one asyncio process)")
    if noisy:
        print(f"  WARNING: other work used more than {NOISY}% of a core during "
              f"{', '.join(noisy)}: those numbers are disturbed; rerun on an idle machine.")
    print()


def print_medians(rows: list[dict], rounds: int) -> None:
    print(f"Medians over {rounds} rounds (min-max of msg/s)")
    print(f"  {'server':<9} {'conns':>5} {'msg/s':>6} {'min-max':>11} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'e2e/s':>6}")
    seen = []
    for r in rows:
        key = (r["server"], r["connections"])
        if key in seen:
            continue
        seen.append(key)
        same = [x for x in rows if (x["server"], x["connections"]) == key and "rate" in x]
        if not same:
            continue
        rates = [x["rate"] for x in same]
        print(f"  {key[0]:<9} {key[1]:>5} {statistics.median(rates):>6.0f} "
              f"{f'{min(rates):.0f}-{max(rates):.0f}':>11} "
              f"{statistics.median(x['p50'] for x in same) * 1000:>7.1f} "
              f"{statistics.median(x['p99'] for x in same) * 1000:>7.1f} "
              f"{statistics.median(x['delivered_rate'] for x in same):>6.0f}")
    print()
    print_head_to_head(rows)


def print_head_to_head(rows: list[dict]) -> None:
    """
    In how many rounds mailsrv beat each other server at each concurrency:
    with run-to-run noise larger than the differences, medians alone can
    hide that the lead changes hands.
    """
    rate = {(r["server"], r["connections"], r["round"]): r["rate"] for r in rows if "rate" in r}
    others = [s for s in dict.fromkeys(r["server"] for r in rows) if s != "mailsrv"]
    lines = []
    for connections in dict.fromkeys(r["connections"] for r in rows):
        for other in others:
            rounds = [n for (s, c, n) in rate if s == "mailsrv" and c == connections
                      and (other, c, n) in rate]
            if rounds:
                won = sum(rate["mailsrv", connections, n] > rate[other, connections, n]
                          for n in rounds)
                lines.append(f"  {connections:>5} conns: mailsrv ahead of {other} in {won} of "
                             f"{len(rounds)} rounds")
    if lines:
        print("Head to head, round by round (msg/s)")
        print("\n".join(lines))
        print()


def parse_list(text: str, convert=str) -> list:
    return [convert(part.strip()) for part in text.split(",") if part.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated, from mailsrv, postfix, aiosmtpd (default all)")
    parser.add_argument("--concurrency", default="1,10,50",
                        help="connections per case, comma-separated (default 1,10,50)")
    parser.add_argument("--messages", type=int, default=None,
                        help="messages per case (default 500 at 1 connection, else 2000)")
    parser.add_argument("--size", type=int, default=5120, help="message size in bytes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every case this many times, interleaved, and add "
                             "medians (default 1)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="messages sent to each server before measuring, over the "
                             "largest concurrency (default 2 per connection, at least 50)")
    parser.add_argument("--pipelining", choices=("auto", "off"), default="auto",
                        help="auto: pipeline when every server advertises PIPELINING")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="seconds per case before it stops sending (default 120)")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="seconds to wait for the Maildir after a case (default 120)")
    parser.add_argument("--postfix-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra main.cf setting for the Postfix instance (repeatable)")
    parser.add_argument("--aiosmtpd-writes", choices=("thread", "inline"), default="thread",
                        help="aiosmtpd handler's Maildir writes: in a thread pool "
                             "(default) or on its event loop")
    parser.add_argument("--dir", default=None, help="where to make the temp dir")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (configs, logs, Maildirs) for inspection")
    args = parser.parse_args()
    try:
        args.servers = parse_list(args.servers)
        args.concurrency = parse_list(args.concurrency, int)
    except ValueError as e:
        parser.error(str(e))
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers or len(set(args.servers)) != len(args.servers):
        parser.error(f"--servers: a list of distinct names from {', '.join(SERVERS)}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency: positive numbers")
    if (args.messages is not None and args.messages < 1) or args.size < 512 or args.rounds < 1:
        parser.error("need --messages >= 1, --size >= 512 and --rounds >= 1")
    if any("=" not in option for option in args.postfix_option):
        parser.error("--postfix-option: KEY=VALUE")

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-smtp-", dir=args.dir))
    # Postfix's unprivileged processes and its virtual(8) uid must reach
    # their directories inside.
    directory.chmod(0o755)
    spread_subdirectories(directory)
    servers: list[Server] = []
    failed = False
    try:
        print_facts(args, directory)
        classes = {"mailsrv": Mailsrv, "postfix": Postfix, "aiosmtpd": Aiosmtpd}
        servers = [classes[name](directory, args) for name in args.servers]
        print("Servers (start-up: from launch to the 220 greeting)")
        for server in servers:
            server.start()
            if server.unavailable is None:
                try:
                    server.extensions = probe_extensions(server.port)
                except (OSError, ProtocolError) as e:
                    server.unavailable = f"EHLO failed: {e}"
                    server.stop()
            if server.unavailable is None:
                advertised = "PIPELINING" in server.extensions
                state = (f"port {server.port}, up in {server.startup:.2f} s; "
                         f"{'PIPELINING' if advertised else 'no PIPELINING'}")
            else:
                state = server.unavailable
            print(f"  {server.name:<9} {state}")
            for note in server.notes:
                print(f"  {'':<9}   {note}")
        live = [s for s in servers if s.unavailable is None]
        lacking = [s.name for s in live if "PIPELINING" not in s.extensions]
        pipelining = args.pipelining == "auto" and bool(live) and not lacking
        reason = ("--pipelining off" if args.pipelining == "off" else
                  f"not advertised by {', '.join(lacking)}" if lacking else
                  "every server advertises PIPELINING")
        print(f"  pipelining: {'on' if pipelining else 'off'} ({reason})")
        print()

        messages = Messages(args.size)
        run_id = secrets.token_hex(3)
        top = max(args.concurrency)
        warmup = args.warmup if args.warmup is not None else max(50, 2 * top)
        for server in live:
            if warmup:
                row = run_case(server, top, warmup, messages, pipelining, args,
                               f"{run_id}-{server.name}-warmup")
                if row.get("problems"):
                    print(f"  warm-up of {server.name} FAILED: " + "; ".join(row["problems"]))
                    failed = True
        rows = []
        for round_ in range(1, args.rounds + 1):
            for connections in args.concurrency:
                total = args.messages or (500 if connections == 1 else 2000)
                for server in servers:
                    row = run_case(server, connections, total, messages, pipelining, args,
                                   f"{run_id}-{server.name}-{connections}-{round_}")
                    rows.append({**row, "round": round_})
                    failed |= bool(row.get("problems"))
        print_rows(rows, pipelining, args.rounds)
        if args.rounds > 1:
            print_medians(rows, args.rounds)
    finally:
        for server in reversed(servers):
            server.stop()
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    on_25 = listening_on_25()
    print("port 25: " + (f"something listens there ({', '.join(on_25)}): not started by "
                         "this benchmark" if on_25 else "nothing listens (as expected)"))
    if failed:
        print("\nFAILED: a server lost, duplicated or refused mail, or the run was cut short "
              "(see above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
