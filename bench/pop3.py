"""
POP3 retrieval: RETR throughput of mailsrv against Dovecot (Debian's
dovecot-pop3d) on copies of the same maildrops, measured by the same client
in the same run.

The mail is bench/imap.py's (its generator, seeded: every run serves the
same bytes, with CRLF line ends, in files named as both servers name them).
POP3 serves nothing but INBOX, so each maildrop is the INBOX of a user of
its own, generated into a master Maildir of its own:

- C{--small} (10,000) messages of about 4 KB, user C{roundN};
- C{--large} (1,000) messages of about 100 KB (made as bench/imap.py makes
  its Large folder), user C{roundN-large}.

Per round, each server has both users on fresh copies of the masters,
never opened by that server (message files hard-linked, as bench/imap.py
does).  Both serve POP3 on a free port of 127.0.0.1, TLS off, USER/PASS
with the same SHA512-CRYPT hash (mailsrv with C{[auth] allow_plaintext}).

Per round, server and maildrop, on a new connection: USER, PASS and STAT,
not timed (both servers list the maildrop at login, and build their index
of it the first time); then C{RETR 1} to C{RETR N}, one command at a time
(each sent once the previous reply has ended), timed client-side from the
first RETR sent to the end of the last reply; then QUIT without DELE (both
servers mark the messages seen then, in this round's copy only).  Rounds
alternate which server goes first.

The figures are messages and MB (10^6 bytes of the messages as stored,
CRLF; dot-stuffing and status lines not counted) per second, the median
over the rounds (min-max).  The issue's target: mailsrv at least half of
Dovecot's throughput on both maildrops.  After the clock stops every reply
is checked: STAT's count and octets, and each RETR's reply +OK with a body
that, unstuffed, is its message file byte for byte (length and CRC-32).

Caveats as in bench/imap.py: every file is in the page cache; the client is
one Python thread (its CPU share of each figure is printed: near 100% the
figure is the client's); client and server share the machine's 2 cores, and
the other work on the machine meanwhile is measured.  C{--profile} then
records mailsrv with py-spy during a RETR pass over each maildrop of a
fresh copy (a separate pass, not measured).

    python bench/pop3.py                        # 3 rounds, 10,000 + 1,000 messages
    python bench/pop3.py --small 2000 --large 200 --rounds 1
    python bench/pop3.py --servers mailsrv --profile    # where mailsrv spends its time

Needs: Debian's dovecot-pop3d (no system instance is configured or
started); for C{--profile}, py-spy (pip install py-spy).
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from passlib.hash import sha512_crypt

HERE = Path(__file__).resolve().parent
# Run as a script, this folder comes first on sys.path, where bench/queue.py
# would stand for the standard library's queue module: put the source tree
# there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == HERE:
    sys.path[0] = str(HERE.parent)
else:
    sys.path.insert(0, str(HERE.parent))

from bench.common import spread_subdirectories  # noqa: E402
from bench.imap import (  # noqa: E402
    CHUNK,
    CLIENT_TIMEOUT,
    DOMAIN,
    PASSWORD,
    RATE,
    SERVERS,
    Dovecot,
    FolderSpec,
    Mailsrv,
    Recording,
    Server,
    Unavailable,
    measure,
    print_facts,
    print_other_work,
    summarize,
    write_master,
)

#: The issue's target: mailsrv's throughput over Dovecot's, at least.
TARGET = 0.5


class POP3Error(Exception):
    """
    A reply that was not +OK, or a connection that broke.
    """


@dataclass
class Maildrop:
    """
    One user's INBOX: its master Maildir, and the length and CRC-32 of
    each message file in UID order (POP3's message numbers).
    """

    suffix: str          # of its users' names
    spec: FolderSpec
    master: Path
    messages: list[tuple[int, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(size for size, _ in self.messages)


def message_files(master: Path) -> list[tuple[int, int]]:
    """
    The length and CRC-32 of each message file of C{master}, in the order
    of its dovecot-uidlist: what RETR 1..N must give.
    """
    files = {path.name.partition(":")[0]: path
             for sub in ("cur", "new") for path in (master / sub).iterdir()}
    records = (master / "dovecot-uidlist").read_text().splitlines()[1:]
    messages = []
    for record in records:
        data = files[record.partition(" :")[2]].read_bytes()
        messages.append((len(data), zlib.crc32(data)))
    return messages


# -- the client ----------------------------------------------------------------


@dataclass
class Retrieved:
    """
    The replies to RETR 1..N, kept whole for the checks: reply i ends at
    C{ends[i - 1]} in C{data}.
    """

    data: bytearray
    ends: list[int]
    sent: float
    done: float


class Client:
    """
    A blocking POP3 client on one socket that reads whatever has arrived
    (poplib reads line by line, too slow to measure a server with).
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.line("greeting")
        except BaseException:
            self.sock.close()
            raise

    def line(self, what: str) -> bytes:
        """
        A single-line reply, which must be +OK.
        """
        data = b""
        while not data.endswith(b"\r\n"):
            more = self.sock.recv(CHUNK)
            if not more:
                raise POP3Error(f"{what}: connection closed by the server")
            data += more
        if not data.startswith(b"+OK"):
            raise POP3Error(f"{what}: {data[:100].decode('ascii', 'replace').strip()}")
        return data

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line(text.partition(" ")[0])

    def login(self, user: str) -> None:
        self.command(f"USER {user}@{DOMAIN}")
        self.command(f"PASS {PASSWORD}")

    def stat(self) -> tuple[int, int]:
        """
        The message count and octets of the maildrop.
        """
        fields = self.command("STAT").split()
        return int(fields[1]), int(fields[2])

    def retrieve(self, count: int) -> Retrieved:
        """
        RETR 1 to C{count}, each once the previous reply has ended.  With
        one command in flight a reply ends where the data ends, with the
        terminating line (a dot-stuffed body has no other "CRLF . CRLF").
        """
        sock, data, ends = self.sock, bytearray(), []
        sent = time.perf_counter()
        for number in range(1, count + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            start = len(data)
            while True:
                more = sock.recv(CHUNK)
                if not more:
                    raise POP3Error(f"RETR {number}: connection closed by the server")
                data += more
                if data.endswith(b"\r\n.\r\n"):
                    break
                if data[start] != 0x2B and data.endswith(b"\r\n"):  # not "+": -ERR
                    raise POP3Error(f"RETR {number}: "
                                    + data[start:start + 100].decode("ascii", "replace").strip())
            ends.append(len(data))
        return Retrieved(data, ends, sent, time.perf_counter())

    def quit(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.sock.close()


def check(retrieved: Retrieved, stat: tuple[int, int], drop: Maildrop) -> list[str]:
    """
    What is wrong in STAT's reply and the RETR replies (see the module
    docstring).
    """
    problems = []
    if stat != (len(drop.messages), drop.size):
        problems.append(f"STAT {stat[0]} {stat[1]}, expected {len(drop.messages)} {drop.size}")
    data, start, wrong = retrieved.data, 0, []
    for number, (end, (size, crc)) in enumerate(zip(retrieved.ends, drop.messages,
                                                     strict=True), 1):
        # The status line, then the body up to the terminating ".\r\n".
        body = bytes(data[data.index(b"\r\n", start) + 2:end - 3])
        body = body.replace(b"\r\n..", b"\r\n.")
        if body.startswith(b".."):
            body = body[1:]
        if len(body) != size or zlib.crc32(body) != crc:
            wrong.append(number)
        start = end
    if wrong:
        problems.append(f"{len(wrong)} RETR replies differ from the message files "
                        f"(the first: RETR {wrong[0]})")
    return problems


# -- a round -------------------------------------------------------------------


def run_maildrop(server: Server, user: str, drop: Maildrop) -> dict:
    """
    One timed pass of RETR over a maildrop, checked after the clock stops.
    """
    row = {"server": server.name, "folder": drop.spec.label}
    try:
        client = Client(server.port)
        try:
            client.login(user + drop.suffix)
            stat = client.stat()
            timed = measure(server, "RETR",
                            lambda: [client.retrieve(len(drop.messages))])
            client.quit()
        finally:
            client.sock.close()
    except (OSError, POP3Error) as e:
        return {**row, "op": "error", "problems": [f"{type(e).__name__}: {e}"]}
    retrieved = timed.pop("replies")[0]
    return {**row, **timed, "problems": check(retrieved, stat, drop)}


def profile_mailsrv(server: Server, drops: list[Maildrop], py_spy: str,
                    directory: Path) -> list[str]:
    """
    Record mailsrv during a RETR pass over each maildrop of the profile
    user's fresh copy; the summaries.
    """
    lines = []
    for drop in drops:
        output = directory / f"profile-RETR{drop.suffix}.txt"
        client = Client(server.port)
        client.login("profile" + drop.suffix)
        with Recording(py_spy, server.process.pid, output):
            retrieved = client.retrieve(len(drop.messages))
        client.quit()
        elapsed = retrieved.done - retrieved.sent
        lines.append(f"  RETR, {drop.spec.label}: {elapsed:.2f} s ({output.name})")
        lines += summarize(output, elapsed)
    return lines


# -- the run -------------------------------------------------------------------


def print_results(rows: list[dict], drops: list[Maildrop], servers: list[Server],
                  rounds: int) -> bool:
    """
    The table of medians; whether every reply was right.
    """
    names = [s.name for s in servers]

    def pick(server: str, drop: Maildrop) -> list[dict]:
        return [r for r in rows if (r["server"], r["folder"], r["op"])
                == (server, drop.spec.label, "RETR")]

    print(f"\nRETR, one command at a time: median over {rounds} round(s) (min-max); "
          "MB = 10^6 bytes of messages;")
    print(f"ratio = mailsrv / Dovecot throughput (target: at least {TARGET}x); "
          "CPU = mailsrv's CPU seconds over the RETRs (all threads, median)")
    print(f"  {'maildrop':<16} {'figure':<6} {'mailsrv':>22} {'Dovecot':>22} "
          f"{'ratio':>6} {'target':>6} {'met':>4} {'CPU':>6}  check")
    correct = True
    for drop in drops:
        problems = Counter(f"{r['server']}: {p}" for r in rows
                           if r["folder"] == drop.spec.label for p in r["problems"])
        correct &= not problems
        for figure, amount in (("msgs/s", len(drop.messages)), ("MB/s", drop.size / 1e6)):
            cells, medians = [], {}
            for name in SERVERS:
                rates = [amount / r["seconds"] for r in pick(name, drop)]
                if rates:
                    medians[name] = statistics.median(rates)
                    digits = 0 if figure == "msgs/s" else 1
                    cells.append(f"{medians[name]:.{digits}f} "
                                 f"({min(rates):.{digits}f}-{max(rates):.{digits}f})")
                else:
                    cells.append("-")
            line = (f"  {drop.spec.label if figure == 'msgs/s' else '':<16} {figure:<6} "
                    f"{cells[0]:>22} {cells[1]:>22}")
            if figure == "msgs/s":
                ratio = medians["mailsrv"] / medians["dovecot"] if len(medians) == 2 else None
                met = "-" if ratio is None else "yes" if ratio >= TARGET else "NO"
                cpu = [r["server_cpu"] for r in pick("mailsrv", drop)]
                line += (f" {f'{ratio:.2f}x' if ratio else '-':>6} {f'{TARGET}x':>6} {met:>4} "
                         f"{f'{statistics.median(cpu):.2f}' if cpu else '-':>6}  "
                         + ("ok" if not problems else "WRONG: " + "; ".join(
                             f"{p} ({n}x)" for p, n in problems.items())))
            print(line)
    errors = [r for r in rows if r["op"] == "error"]
    for row in errors:
        print(f"  {row['server']} on {row['folder']}: FAILED: {row['problems'][0]}")
    print(f"  CPU in % of the elapsed time (median; {'/'.join(names)}), of the server and of "
          "the client (near 100 the client is the limit):")
    for drop in drops:
        shares = {key: "/".join(
            f"{100 * statistics.median(r[key] / r['seconds'] for r in pick(name, drop)):.0f}"
            for name in names if pick(name, drop)) for key in ("server_cpu", "client_cpu")}
        print(f"    {drop.spec.label}: server {shares['server_cpu']}, "
              f"client {shares['client_cpu']}")
    print_other_work(rows)
    return correct and not errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="each server measured this many times, each on a fresh copy "
                             "(default 3)")
    parser.add_argument("--small", type=int, default=10000,
                        help="messages of ~4 KB in the first maildrop (default 10000)")
    parser.add_argument("--large", type=int, default=1000,
                        help="messages of ~100 KB in the second maildrop (default 1000)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated, from mailsrv, dovecot (default both)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, record mailsrv with py-spy during a RETR pass on a "
                             "fresh copy, print the hottest functions (implies --keep)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy")
                        or str(Path(sys.executable).with_name("py-spy")),
                        help="the py-spy program for --profile")
    parser.add_argument("--dir", default=None, help="where to make the temp dir")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (Maildirs, configs, logs, profiles)")
    args = parser.parse_args()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if not names or set(names) - set(SERVERS) or len(set(names)) != len(names):
        parser.error(f"--servers: distinct names from {', '.join(SERVERS)}")
    if args.rounds < 1 or args.small < 1 or args.large < 1:
        parser.error("need --rounds, --small and --large >= 1")
    if args.profile and ("mailsrv" not in names or not Path(args.py_spy).is_file()):
        parser.error(f"--profile: needs mailsrv and py-spy ({args.py_spy}: pip install py-spy)")
    args.keep |= args.profile

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-pop3-", dir=args.dir))
    directory.chmod(0o755)
    spread_subdirectories(directory)
    drops = [Maildrop("", FolderSpec("INBOX", args.small, False), directory / "master"),
             Maildrop("-large", FolderSpec("INBOX", args.large, True),
                      directory / "master-large")]
    users = [f"round{n}" for n in range(1, args.rounds + 1)]
    servers: list[Server] = []
    rows = []
    correct = True
    try:
        password_hash = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD)
        classes = {"mailsrv": Mailsrv, "dovecot": Dovecot}
        servers = [classes[name](directory, password_hash, 0, "pop3")
                   for name in SERVERS if name in names]
        print_facts(directory, servers,
                    f"{args.small} messages of ~4 KB and {args.large} of ~100 KB, each the "
                    "INBOX of a user of its own; CRLF line ends")
        started = time.perf_counter()
        for drop in drops:
            write_master(drop.master, [drop.spec], lf=False)
            drop.messages = message_files(drop.master)
        generated = time.perf_counter() - started
        for server in servers:
            server.add_users({user + drop.suffix: drop.master
                              for user in users + (["profile"] if args.profile else [])
                              for drop in drops})
        os.sync()
        print(f"prepared     in {generated:.1f} s (masters), "
              f"{time.perf_counter() - started - generated:.1f} s (copies for "
              f"{len(servers)} server(s) x {len(users)} round(s))")
        for server in servers:
            server.start()
        for number, user in enumerate(users):
            for server in servers if number % 2 == 0 else servers[::-1]:
                rows += [run_maildrop(server, user, drop) for drop in drops]
        correct = print_results(rows, drops, servers, args.rounds)
        if args.profile:
            mailsrv = next(s for s in servers if s.name == "mailsrv")
            print(f"\nProfile of mailsrv (py-spy at {RATE} Hz, samples of the thread holding "
                  "the GIL), on a fresh copy")
            print("\n".join(profile_mailsrv(mailsrv, drops, args.py_spy, directory)))
    except Unavailable as e:
        print(f"\nFAILED: {e}")
        correct = False
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            if isinstance(server, Mailsrv) and server.tracebacks():
                print(f"\nmailsrv logged {server.tracebacks()} tracebacks "
                      f"({server.log}{'' if args.keep else '; --keep to read them'})")
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if not correct:
        print("\nFAILED: a server gave a wrong reply or failed (see above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
