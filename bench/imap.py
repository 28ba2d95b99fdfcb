"""
IMAP4rev1 reading: mailsrv against Dovecot (Debian's dovecot-imapd) on
copies of the same Maildir, measured by the same client in the same run.

The mail: one user with two folders, generated once per run (seeded: every
run serves the same bytes) into a master Maildir laid out as mailsrv's
store lays it out (DATA/mail/<domain>/<local>/, Maildir++):

- INBOX: C{--small} (10,000) messages of about 4 KB;
- Large: C{--large} (1,000) messages of about 100 KB.

The messages look like real mail: Return-Path, two Received, a
DKIM-Signature on half, From and To (Cc on a quarter), a Subject (every
eleventh RFC 2047-encoded), Date, Message-ID, In-Reply-To and References on
replies; plain text, multipart/alternative (text and HTML) or
multipart/mixed with a base64 attachment (a fifth of INBOX, most of Large).
The files are named as both servers name them (C{,S=size,W=size with CRLF}),
most in cur/ with flags (S, RS, FS), the last 3% unseen in new/, their
mtime (the internal date) the Date header's; each folder has a
C{dovecot-uidlist} (UIDs 1..N), as a folder either server has served.
Line ends are CRLF, as mailsrv stores SMTP deliveries; C{--lf} writes LF,
as Dovecot's deliveries leave them (a migrated Maildir: both servers then
add the CRs on the fly).

Per round, each server has a user of its own whose Maildir is a fresh copy
of the master, never opened by that server (message files hard-linked,
which neither server writes in place; the uidlist and other files copied).
Both serve IMAP on a free port of 127.0.0.1, TLS off, with the same
SHA512-CRYPT password hash (5000 rounds, as C{doveadm pw} makes them):
mailsrv's default argon2 costs ~0.3 s per login here, which would swamp
LOGIN + SELECT and make 500 logins take minutes.

Per round, server and folder, timed client-side (time.perf_counter, from
the first command sent to the last tagged reply; connecting and the
greeting are not timed):

1. cold, on a new connection: LOGIN + SELECT, then C{UID FETCH 1:* (UID
   FLAGS RFC822.SIZE ENVELOPE)}, LOGOUT.  Neither server has an index of
   the folder yet: mailsrv reads the uidlist and builds its index and the
   MIME outlines, Dovecot its dovecot.index* files.  "first access" is
   the sum of the two.
2. warm, on another connection: LOGIN + SELECT, the same UID FETCH (the
   second time), C{UID FETCH 1:* BODY.PEEK[]}, C{SEARCH SUBJECT zeppelin}
   (the word is in the subject of every 500th message), LOGOUT.

Rounds alternate which server goes first.  Then idle memory, in INBOX and
again in Large (how the cost grows with the folder): each server is
restarted, one connection SELECTs the folder (so the folder itself is
loaded), and the resident memory of all the server's processes is summed;
then C{--connections} (500) more log in, SELECT it and IDLE (opened 20 at a
time), and a second later the sum is taken again: KB per connection is the
growth over their number.  Then the first connection APPENDs a message to
the folder and the time until each idling connection hears of it is taken.
mailsrv is one process; Dovecot has an imap process per connection, whose
RSS counts the pages they share (libraries, the mmap'd index) once per
process, as the issue asks; PSS (each shared page divided among its users:
what the machine pays) is shown beside.
The connections are then closed without LOGOUT, as a client that goes away
does.

Every reply is checked against the generated mail after the clock stops:
the EXISTS count, the number of FETCH responses, every UID, the sum of
RFC822.SIZE, the \\Seen count, one ENVELOPE each, the bytes and CRC-32 of
the BODY[] literals in UID order, the SEARCH result.

Caveats: the master was just written, so every file is in the page cache:
"cold" means no index, not a cold disk.  The client is one Python thread
reading with its own loop (it follows literals to find the end of a reply
and parses nothing else while the clock runs); its CPU share of each
figure is printed, and where it nears 100% the figure is the client's.
Server and client share the machine's 2 cores (Dovecot's imap process
and mailsrv's reactor each need one); what the rest of the machine used
meanwhile is measured (/proc/stat), and a figure is flagged when that
passes a quarter of a core.  On ext4 without a journal (the test
machine) creating a file skips the inodes of its block group deleted in the
last minutes: the temp dir is marked C{chattr +T} so that each server's
files get a block group of their own, and between two runs (whose ends
delete 2 x 11,000 files) leave a minute.  C{--profile} then records mailsrv
with py-spy during each operation on a fresh copy (a separate pass, not
measured): the samples of whichever thread holds the GIL, summed by
function.

    python bench/imap.py                       # 3 rounds, 10,000 + 1,000 messages
    python bench/imap.py --rounds 5 --connections 500
    python bench/imap.py --small 2000 --large 200 --rounds 1 --connections 50
    python bench/imap.py --servers mailsrv --profile    # where mailsrv spends its time

Needs: Debian's dovecot-imapd (no system instance is configured or
started); for C{--profile}, py-spy (pip install py-spy).
"""

import argparse
import base64
import grp
import itertools
import os
import platform
import pwd
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
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

from bench.common import (  # noqa: E402
    filesystem_of,
    free_port,
    machine_cpu,
    own_cpu,
    source_state,
    spread_subdirectories,
    stop_process,
    tail,
)
from tests.sourcetree import server_environment, twistd_command  # noqa: E402

REFERENCE = HERE / "imap_reference"
DOVECOT = Path("/usr/sbin/dovecot")
#: Where Debian puts Dovecot's per-protocol programs.
DOVECOT_LIBEXEC = Path("/usr/lib/dovecot")
UNSHARE = Path("/usr/bin/unshare")
DOMAIN = "bench.example"
PASSWORD = "bench-password"
SERVERS = ("mailsrv", "dovecot")
SEARCH_WORD = "zeppelin"
#: Every this many messages has the search word in its subject.
SEARCH_EVERY = 500
HEADERS = "UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)"
BODIES = "UID FETCH 1:* BODY.PEEK[]"
SEARCH = f"SEARCH SUBJECT {SEARCH_WORD}"
#: Seconds for a server to greet after it is started, to stop politely,
#: and for the client to wait for any reply.
START_TIMEOUT = 60.0
CLIENT_TIMEOUT = 300.0
#: Idle connections opened at a time.
GROUP = 20
#: Other work on the machine during an operation (share of one core) above
#: which its figure is flagged as disturbed.
NOISY = 0.25
#: Operations shorter than this (seconds) are not judged: /proc counts CPU
#: time in 10 ms ticks.
JUDGED = 0.25
CHUNK = 1 << 18


class Unavailable(Exception):
    """
    A server that cannot be measured in this run; the message says why.
    """


class IMAPError(Exception):
    """
    A reply that was not OK, or a connection that broke.
    """


# -- the mail ------------------------------------------------------------------


@dataclass(frozen=True)
class FolderSpec:
    name: str
    count: int
    large: bool

    @property
    def label(self) -> str:
        return f"{self.name} {self.count}x{'100' if self.large else '4'}K"


@dataclass
class Truth:
    """
    What a folder holds, to check replies against.
    """

    count: int = 0
    size: int = 0        # RFC822.SIZE summed (CRLF line ends)
    seen: int = 0
    crc: int = 0         # CRC-32 of every message, CRLF line ends, UID order
    search: list[int] = field(default_factory=list)


_WORDS = ("account agenda answer approval archive budget calendar change client "
          "contract customer dashboard deadline delivery design draft estimate "
          "feedback figures forecast holiday invoice launch meeting milestone minutes "
          "network office order outline payment planning policy pricing project "
          "proposal quarter question release renewal report request review roadmap "
          "schedule security server shipment slides status summary support survey "
          "team ticket training travel update vendor workshop").split()
_NAMES = [("Alice", "Martin"), ("Bob", "Nguyen"), ("Carol", "Smith"), ("David", "Okafor"),
          ("Emma", "Rossi"), ("Farid", "Haddad"), ("Grace", "Kim"), ("Hugo", "Lefebvre"),
          ("Ingrid", "Larsen"), ("José", "García"), ("Zoë", "Müller"), ("Łukasz", "Nowak"),
          ("Søren", "Ødegaard"), ("Amélie", "Dupré"), ("Kenji", "Sato"), ("Priya", "Patel")]
_DOMAINS = ["example.com", "example.net", "example.org", "corp.example", "lists.example.org"]
_ZONES = [0, 60, 120, -300, -480, 330]
_ATTACHMENTS = [("application/pdf", "report.pdf"), ("image/png", "screenshot.png"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                 "figures.xlsx"), ("text/calendar", "invite.ics")]
#: Dates run over two years from here.
FIRST_DATE = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def encoded_word(text: str) -> str:
    """
    C{text} as one RFC 2047 encoded word when it is not ASCII.
    """
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


class MailMaker:
    """
    Realistic messages, the same for the same seed (see the module docstring).
    """

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.paragraphs = [self._paragraph() for _ in range(400)]

    def _paragraph(self) -> str:
        words = []
        for _ in range(self.rng.randint(3, 7)):
            sentence = self.rng.choices(_WORDS, k=self.rng.randint(6, 16))
            words += [sentence[0].capitalize(), *sentence[1:-1], sentence[-1] + "."]
        lines, line = [], ""
        for word in words:
            if line and len(line) + 1 + len(word) > 72:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        return "\r\n".join([*lines, line]) + "\r\n"

    def _text(self, size: int) -> str:
        chosen, total = [], 0
        while total < size:
            chosen.append(self.rng.choice(self.paragraphs))
            total += len(chosen[-1]) + 2
        return "\r\n".join(chosen)

    def _address(self) -> tuple[str, str]:
        first, last = self.rng.choice(_NAMES)
        address = f"{first.lower()}.{last.lower()}@{self.rng.choice(_DOMAINS)}"
        return encoded_word(f"{first} {last}"), address.encode("ascii", "ignore").decode()

    def message(self, n: int, large: bool) -> tuple[bytes, float]:
        """
        Message C{n} of a folder (CRLF line ends) and its date.
        """
        rng = self.rng
        date = FIRST_DATE + n * 6000 + rng.uniform(0, 3000)
        stamp = format_datetime(datetime.fromtimestamp(
            date, timezone(timedelta(minutes=rng.choice(_ZONES)))))
        name, sender = self._address()
        domain = sender.rpartition("@")[2]
        to = f"bench.user@{DOMAIN}"
        topic = " ".join(rng.choices(_WORDS, k=rng.randint(2, 6))).capitalize()
        if n % SEARCH_EVERY == SEARCH_EVERY // 2:
            subject = f"{topic} and the {SEARCH_WORD.capitalize()} {rng.choice(_WORDS)}"
        elif n % 11 == 0:
            subject = encoded_word(f"Réunion: {topic}")
        else:
            subject = topic
        reply = n % 3 == 0
        ident = f"{rng.getrandbits(64):016x}.{n}@{domain}"
        head = [f"Return-Path: <{sender}>", f"Delivered-To: {to}",
                f"Received: from mx.{domain} (mx.{domain} [192.0.2.{n % 250 + 1}])\r\n"
                f"\tby mail.{DOMAIN} (mailsrv) with ESMTPS id {rng.getrandbits(48):012X}\r\n"
                f"\tfor <{to}>; {stamp}",
                f"Received: from [198.51.100.{n % 200 + 1}] (unknown [198.51.100.7])\r\n"
                f"\tby mx.{domain} with ESMTPSA id {rng.getrandbits(48):012X}; {stamp}"]
        if n % 2:
            signature = base64.b64encode(rng.randbytes(256)).decode()
            head.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\r\n"
                        f"\ts=s2024; t={int(date)}; h=from:to:subject:date:message-id;\r\n"
                        f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};\r\n\tb="
                        + "\r\n\t ".join(signature[i:i + 70] for i in range(0, 344, 70)))
        head += [f"From: {name} <{sender}>", f"To: Bench User <{to}>"]
        if n % 4 == 1:
            head.append("Cc: " + ", ".join(f"{a} <{b}>" for a, b in (self._address(),
                                                                    self._address())))
        head += [f"Subject: {'Re: ' if reply else ''}{subject}", f"Date: {stamp}",
                 f"Message-ID: <{ident}>"]
        if reply:
            parent = f"<{rng.getrandbits(64):016x}@{domain}>"
            head += [f"In-Reply-To: {parent}", f"References: {parent}"]
        head.append("MIME-Version: 1.0")
        header = "\r\n".join(head) + "\r\n"
        target = rng.randint(60_000, 140_000) if large else rng.randint(2600, 5600)
        budget = max(400, target - len(header))
        kind = ((n % 10 < 7 and "mixed") or (n % 10 < 9 and "alternative") or "plain") \
            if large else ("mixed" if n % 5 == 0 else "alternative" if n % 9 == 0 else "plain")
        boundary = f"=_{rng.getrandbits(64):016x}"
        if kind == "plain":
            return (header + "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 7bit\r\n\r\n" + self._text(budget)).encode(), date
        text = self._text(min(1500, budget // 3))
        if kind == "alternative":
            html = "<html><body>\r\n" + "".join(
                f"<p>{p}</p>\r\n" for p in self._text(budget - len(text) - 400).split("\r\n\r\n")
            ) + "</body></html>\r\n"
            second = ("Content-Type: text/html; charset=utf-8\r\n"
                      "Content-Transfer-Encoding: 7bit\r\n\r\n" + html)
        else:
            mime, filename = rng.choice(_ATTACHMENTS)
            raw = max(64, int((budget - len(text) - 500) / 1.37))
            data = base64.encodebytes(rng.randbytes(raw)).decode().replace("\n", "\r\n")
            second = (f'Content-Type: {mime}; name="{filename}"\r\n'
                      f'Content-Disposition: attachment; filename="{filename}"\r\n'
                      "Content-Transfer-Encoding: base64\r\n\r\n" + data)
        body = (f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\n'
                "This is a multi-part message in MIME format.\r\n\r\n"
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
                f"--{boundary}\r\n{second}\r\n--{boundary}--\r\n")
        return (header + body).encode(), date


def write_folder(directory: Path, spec: FolderSpec, maker: MailMaker, lf: bool,
                 uidvalidity: int) -> Truth:
    """
    Generate a folder's messages into C{directory} (a Maildir) with its
    dovecot-uidlist; what it holds.
    """
    for sub in ("cur", "new", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    truth = Truth(count=spec.count)
    unseen_from = spec.count - max(1, spec.count * 3 // 100)
    records = []
    for n in range(spec.count):
        message, date = maker.message(n, spec.large)
        truth.size += len(message)
        truth.crc = zlib.crc32(message, truth.crc)
        if n % SEARCH_EVERY == SEARCH_EVERY // 2:
            truth.search.append(n + 1)
        stored = message.replace(b"\r\n", b"\n") if lf else message
        base = (f"{int(date)}.M{n % 1000000:06d}P{4000 + n % 97}Q{n}.bench.invalid,"
                f"S={len(stored)},W={len(message)}")
        if n >= unseen_from:
            path = directory / "new" / base
        else:
            letters = "".join(sorted("S" + ("R" if n % 7 == 0 else "")
                                     + ("F" if n % 29 == 0 else "")))
            path = directory / "cur" / f"{base}:2,{letters}"
            truth.seen += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, stored)
        finally:
            os.close(fd)
        os.utime(path, (date, date))
        records.append(f"{n + 1} :{base}\n")
    guid = f"{maker.rng.getrandbits(128):032x}"
    (directory / "dovecot-uidlist").write_text(
        f"3 V{uidvalidity} N{spec.count + 1} G{guid}\n" + "".join(records))
    return truth


def write_master(root: Path, folders: list[FolderSpec], lf: bool) -> dict[str, Truth]:
    """
    The master Maildir++ of the benchmark's user, at C{root}.
    """
    maker = MailMaker(seed=20060102)
    truths = {}
    for number, spec in enumerate(folders):
        directory = root if spec.name == "INBOX" else root / f".{spec.name}"
        truths[spec.name] = write_folder(directory, spec, maker, lf, 1700000000 + number)
        if spec.name != "INBOX":
            (directory / "maildirfolder").touch()
    return truths


def copy_maildir(master: Path, target: Path) -> None:
    """
    A fresh copy of C{master} at C{target}: message files (cur/, new/)
    hard-linked, everything else copied.
    """
    for folder, _, files in os.walk(master):
        into = target / os.path.relpath(folder, master)
        into.mkdir(parents=True, exist_ok=True)
        link = os.path.basename(folder) in ("cur", "new")
        for name in files:
            source = os.path.join(folder, name)
            if link:
                os.link(source, into / name)
            else:
                shutil.copy2(source, into / name)


# -- the client ----------------------------------------------------------------


@dataclass
class Reply:
    """
    The responses to one command, kept whole for the checks.

    @ivar data: every response, the tagged (or continuation) line last.
    @ivar literals: (offset, size) in C{data} of every literal.
    """

    status: bytes
    responses: int
    literals: list[tuple[int, int]]
    data: bytearray
    done: float
    sent: float = 0.0


class Client:
    """
    A blocking IMAP client on one socket: sends commands, reads until their
    tagged reply, following literals; it parses nothing else.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.tags = itertools.count(1)
        greeting = self.read(b"* ").status
        if not greeting.startswith(b"* OK"):
            self.sock.close()
            raise IMAPError("greeting: " + greeting.decode("ascii", "replace"))

    def send(self, text: str) -> tuple[bytes, float]:
        """
        Send a command; its tag and when it went.
        """
        tag = b"a%d" % next(self.tags)
        sent = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        return tag, sent

    def finish(self, tag: bytes, sent: float, text: str) -> Reply:
        """
        Read the responses to the command sent as C{tag}; it must succeed.
        """
        reply = self.read(tag + b" ")
        reply.sent = sent
        if not reply.status.startswith(tag + b" OK"):
            raise IMAPError(f"{text[:40]}: {reply.status.decode('ascii', 'replace')[:100]}")
        return reply

    def command(self, text: str) -> Reply:
        return self.finish(*self.send(text), text)

    def login(self, user: str) -> Reply:
        return self.command(f'LOGIN "{user}@{DOMAIN}" "{PASSWORD}"')

    def read(self, stop: bytes) -> Reply:
        """
        Read whole responses until one starts with C{stop}.
        """
        buffer, receive = self.buffer, self.sock.recv
        start = line = responses = 0   # the response, and its line after a literal
        literals = []
        while True:
            end = buffer.find(b"\r\n", line)
            if end < 0:
                more = receive(CHUNK)
                if not more:
                    raise IMAPError("connection closed by the server")
                buffer += more
                continue
            if end > line and buffer[end - 1] == 0x7D:  # "}": a literal follows
                opening = buffer.rfind(b"{", line, end)
                if opening >= 0 and buffer[opening + 1:end - 1].isdigit():
                    size = int(buffer[opening + 1:end - 1])
                    literals.append((end + 2, size))
                    line = end + 2 + size
                    while len(buffer) < line:
                        more = receive(max(CHUNK, line - len(buffer)))
                        if not more:
                            raise IMAPError("connection closed by the server")
                        buffer += more
                    continue
            if buffer.startswith(stop, start):
                done = time.perf_counter()
                self.buffer = buffer[end + 2:]
                del buffer[end + 2:]
                return Reply(bytes(buffer[start:end]), responses, literals, buffer, done)
            responses += 1
            start = line = end + 2

    def idle(self) -> None:
        """
        Start IDLE and wait for the server's continuation.
        """
        self.send("IDLE")
        self.read(b"+ ")

    def logout(self) -> None:
        try:
            self.command("LOGOUT")
        finally:
            self.sock.close()


# -- the servers ---------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """
    C{root} and all its descendants.
    """
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        parent = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int) -> float:
    """
    CPU seconds of C{root} and its descendants, with the children they reaped.
    """
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        total += sum(int(x) for x in data[data.rindex(b")") + 2:].split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def tree_memory(root: int) -> tuple[int, int, int]:
    """
    RSS and PSS (KB) summed over C{root} and its descendants, and how many
    processes that is.
    """
    rss = pss = count = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        rss += int(fields.get("Rss", "0 kB").split()[0])
        pss += int(fields.get("Pss", "0 kB").split()[0])
        count += 1
    return rss, pss, count


#: How each protocol's greeting starts, when the server is ready.
GREETINGS = {"imap": b"* OK", "pop3": b"+OK"}


def greeting(port: int) -> bytes:
    """
    The first line from 127.0.0.1:C{port} (OSError while nothing listens).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        data = b""
        while b"\n" not in data and (more := sock.recv(CHUNK)):
            data += more
    return data


class Server:
    """
    A server under test, all its state in its own folder of the temp dir,
    serving one protocol (imap or pop3: bench/pop3.py uses these too).
    """

    name = ""
    title = ""

    def __init__(self, root: Path, password_hash: str, protocol: str):
        self.directory = root / self.name
        self.directory.mkdir()
        self.password_hash = password_hash
        self.protocol = protocol
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.log = self.directory / "server.log"

    def home(self, user: str) -> Path:
        return self.mail_root / DOMAIN / user

    def add_users(self, masters: dict[str, Path]) -> None:
        """
        For each user, a fresh copy of their master Maildir; their passwords.
        """
        for user, master in masters.items():
            copy_maildir(master, self.home(user))
        self.write_users(list(masters))

    def start(self) -> None:
        """
        Launch, then wait for the protocol's greeting.
        """
        self.port = free_port()
        self.launch()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(f"{self.name} exited with status "
                                  f"{self.process.returncode}: {tail(self.log)}")
            try:
                line = greeting(self.port)
            except OSError:
                time.sleep(0.05)
                continue
            if not line.startswith(GREETINGS[self.protocol]):
                raise Unavailable(f"{self.name}: greeting {line[:100]!r}")
            return
        raise Unavailable(f"{self.name}: no greeting after {START_TIMEOUT:.0f} s: "
                          + tail(self.log))

    def popen(self, command: list[str], **kwargs) -> None:
        with (self.directory / "output.txt").open("ab") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True, **kwargs)

    def stop(self) -> None:
        """
        SIGTERM to the process group, wait, then SIGKILL what is left.
        """
        process, self.process = self.process, None
        stop_process(process)

    def cpu(self) -> float:
        return tree_cpu(self.process.pid)

    def memory(self) -> tuple[int, int, int]:
        return tree_memory(self.process.pid)


class Mailsrv(Server):
    """
    C{twistd -n --pidfile= mailsrv --config CONFIG} from this source tree,
    with a generated config.
    """

    name = "mailsrv"
    title = "mailsrv"

    def __init__(self, root: Path, password_hash: str, connections: int, protocol: str):
        super().__init__(root, password_hash, protocol)
        self.data = self.directory / "data"
        self.mail_root = self.data / "mail"
        self.connections = connections

    def write_users(self, users: list[str]) -> None:
        self.data.mkdir(exist_ok=True)
        (self.data / "users").write_text(
            "".join(f"{user}@{DOMAIN}:{self.password_hash}\n" for user in users))

    def tracebacks(self) -> int:
        """
        How many tracebacks mailsrv logged (in all of twistd's rotated logs).
        """
        return sum(path.read_text("utf-8", "replace").count("Traceback")
                   for path in self.directory.glob("server.log*"))

    def launch(self) -> None:
        config = self.directory / "mailsrv.toml"
        listeners = "\n".join(
            f'{role} = ["tcp:{self.port}:interface=127.0.0.1"]' if role == self.protocol
            else f"{role} = []"
            for role in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"))
        room = self.connections + 100
        config.write_text(
            '[server]\nhostname = "mailsrv.bench.invalid"\ndata_dir = "data"\n\n'
            f"[listeners]\n{listeners}\n\n"
            f'[domains."{DOMAIN}"]\n\n'
            "[auth]\nallow_plaintext = true\n\n"
            f"[limits]\nmax_connections = {room}\nmax_connections_per_ip = {room}\n"
            f"max_connections_per_user = {room}\n")
        self.popen(twistd_command("-n", "--pidfile=", f"--logfile={self.log}", "mailsrv",
                                  "--config", str(config)),
                   cwd=self.directory, env=server_environment())


def rootless() -> tuple[list[str], str, str, int, int]:
    """
    As tests/dovecot.py does (Dovecot's imap refuses to run as root): the
    command prefix that starts Dovecot as one unprivileged user (as root,
    in a user namespace where root is nobody, so the files stay root's),
    and that user's name, group, uid and gid as Dovecot sees them.
    """
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        return [], pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name, uid, gid
    nobody = pwd.getpwnam("nobody")
    return ([str(UNSHARE), "--user", f"--map-user={nobody.pw_uid}",
             f"--map-group={nobody.pw_gid}"], "nobody", grp.getgrgid(nobody.pw_gid).gr_name,
            nobody.pw_uid, nobody.pw_gid)


class Dovecot(Server):
    """
    A private Dovecot (C{dovecot -F -c CONFIG}) from bench/imap_reference/,
    users' homes (Maildir++ roots) at C{mail/<domain>/<local>}.
    """

    name = "dovecot"

    def __init__(self, root: Path, password_hash: str, connections: int, protocol: str):
        super().__init__(root, password_hash, protocol)
        self.mail_root = self.directory / "mail"
        self.connections = connections
        if not DOVECOT.exists() or not (DOVECOT_LIBEXEC / protocol).exists():
            raise Unavailable(f"Dovecot's {protocol} is missing: install Debian's "
                              f"dovecot-{protocol}d")
        self.version = subprocess.run([str(DOVECOT), "--version"], capture_output=True,
                                      text=True, timeout=30).stdout.split(" ")[0]
        self.title = f"Dovecot {self.version}"

    def write_users(self, users: list[str]) -> None:
        (self.directory / "passwd").write_text("".join(
            f"{user}@{DOMAIN}:{self.password_hash}::::{self.home(user)}::\n" for user in users))

    def launch(self) -> None:
        prefix, user, group, uid, gid = rootless()
        for sub in ("run", "state"):
            (self.directory / sub).mkdir(exist_ok=True)
        config = self.directory / "dovecot.conf"
        config.write_text((REFERENCE / "dovecot.conf").read_text().format(
            base_dir=self.directory / "run", state_dir=self.directory / "state",
            log_path=self.log, user=user, group=group, uid=uid, gid=gid,
            passwd=self.directory / "passwd", protocol=self.protocol, port=self.port,
            connections=self.connections + 100, processes=self.connections + 100,
            clients=4 * (self.connections + 100)))
        self.popen([*prefix, str(DOVECOT), "-F", "-c", str(config)])


# -- a round -------------------------------------------------------------------


#: (key, label, target ratio): in the order printed.
OPERATIONS = [
    ("select-cold", "LOGIN+SELECT, cold", None),
    ("headers-cold", "FETCH headers, cold", None),
    ("first", "first access (both above)", 2.0),
    ("select-warm", "LOGIN+SELECT, warm", None),
    ("headers-warm", "FETCH headers, warm", 3.0),
    ("bodies", "FETCH BODY.PEEK[]", 3.0),
    ("search", f"SEARCH SUBJECT {SEARCH_WORD}", 3.0),
]


def measure(server: Server, key: str, run) -> dict:
    """
    Run C{run()} (it returns the replies of the operation), with the CPU
    used meanwhile by the server, by us, and by everything else ("other",
    in % of one core over the operation).
    """
    machine, ours, cpu = machine_cpu()[0], own_cpu(), server.cpu()
    own = own_cpu()
    replies = run()
    own = own_cpu() - own
    cpu = server.cpu() - cpu
    ours, machine = own_cpu() - ours, machine_cpu()[0] - machine
    seconds = replies[-1].done - replies[0].sent
    return {"op": key, "seconds": seconds, "server_cpu": cpu, "client_cpu": own,
            "other": max(0.0, machine - cpu - ours) / seconds, "replies": replies}


def check_select(replies: list[Reply], truth: Truth) -> list[str]:
    found = re.search(rb"\* (\d+) EXISTS\r\n", replies[-1].data)
    exists = int(found.group(1)) if found else None
    return [] if exists == truth.count else [f"EXISTS {exists}, expected {truth.count}"]


def check_headers(replies: list[Reply], truth: Truth) -> list[str]:
    reply = replies[-1]
    data = reply.data
    uids = [int(x) for x in re.findall(rb"[( ]UID (\d+)", data)]
    sizes = sum(int(x) for x in re.findall(rb"RFC822\.SIZE (\d+)", data))
    seen = sum(b"\\Seen" in flags for flags in re.findall(rb"FLAGS \(([^)]*)\)", data))
    problems = []
    if reply.responses != truth.count:
        problems.append(f"{reply.responses} responses for {truth.count} messages")
    if uids != list(range(1, truth.count + 1)):
        problems.append(f"{len(uids)} UIDs, not 1..{truth.count}")
    if sizes != truth.size:
        problems.append(f"RFC822.SIZE sum {sizes}, expected {truth.size}")
    if seen != truth.seen:
        problems.append(f"{seen} \\Seen, expected {truth.seen}")
    if data.count(b" ENVELOPE (") != truth.count:
        problems.append(f"{data.count(b' ENVELOPE (')} ENVELOPEs")
    return problems


def check_bodies(replies: list[Reply], truth: Truth) -> list[str]:
    reply = replies[-1]
    view = memoryview(reply.data)
    crc = total = 0
    for start, size in reply.literals:
        crc = zlib.crc32(view[start:start + size], crc)
        total += size
    view.release()
    problems = []
    if reply.responses != truth.count or len(reply.literals) != truth.count:
        problems.append(f"{reply.responses} responses, {len(reply.literals)} literals "
                        f"for {truth.count} messages")
    if total != truth.size or crc != truth.crc:
        problems.append(f"BODY[] literals: {total} bytes (expected {truth.size}), "
                        f"CRC-32 {'same' if crc == truth.crc else 'differs'}")
    return problems


def check_search(replies: list[Reply], truth: Truth) -> list[str]:
    found = re.search(rb"\* SEARCH([ 0-9]*)\r\n", replies[-1].data)
    numbers = [int(x) for x in found.group(1).split()] if found else None
    return [] if numbers == truth.search else [f"SEARCH gave {numbers}, expected {truth.search}"]


CHECKS = {"select-cold": check_select, "select-warm": check_select,
          "headers-cold": check_headers, "headers-warm": check_headers,
          "bodies": check_bodies, "search": check_search}


def run_folder(server: Server, user: str, spec: FolderSpec, truth: Truth) -> list[dict]:
    """
    The cold and the warm session on one folder (see the module docstring).
    """
    rows = []
    for phase in ("cold", "warm"):
        client = Client(server.port)
        rows.append(measure(server, f"select-{phase}", lambda c=client: [
            c.login(user), c.command(f"SELECT {spec.name}")]))
        rows.append(measure(server, f"headers-{phase}",
                            lambda c=client: [c.command(HEADERS)]))
        if phase == "warm":
            rows.append(measure(server, "bodies", lambda c=client: [c.command(BODIES)]))
            rows.append(measure(server, "search", lambda c=client: [c.command(SEARCH)]))
        client.logout()
    for row in rows:
        row["problems"] = CHECKS[row["op"]](row.pop("replies"), truth)
    cold = rows[:2]
    rows.append({"op": "first", **{key: sum(r[key] for r in cold) for key in
                                   ("seconds", "server_cpu", "client_cpu")},
                 "other": max(r["other"] for r in cold), "problems": []})
    return [{**row, "server": server.name, "folder": spec.name} for row in rows]


def run_round(server: Server, user: str, folders: list[FolderSpec],
              truths: dict[str, Truth]) -> list[dict]:
    rows = []
    for spec in folders:
        try:
            rows += run_folder(server, user, spec, truths[spec.name])
        except (OSError, IMAPError) as e:
            rows.append({"op": "error", "server": server.name, "folder": spec.name,
                         "problems": [f"{type(e).__name__}: {e}"]})
    return rows


def idle_memory(server: Server, user: str, spec: FolderSpec, connections: int) -> dict:
    """
    Resident memory before and after opening C{connections} that IDLE in
    the folder.
    """
    first = Client(server.port)
    first.login(user)
    first.command(f"SELECT {spec.name}")
    time.sleep(1)
    before = server.memory()
    clients = [first]
    started = time.perf_counter()
    try:
        for group in range(0, connections, GROUP):
            batch = [Client(server.port) for _ in range(min(GROUP, connections - group))]
            clients += batch
            for text in (f'LOGIN "{user}@{DOMAIN}" "{PASSWORD}"', f"SELECT {spec.name}"):
                for client, sent in [(c, c.send(text)) for c in batch]:
                    client.finish(*sent, text)
            for client in batch:
                client.idle()
        opened = time.perf_counter() - started
        time.sleep(1)
        after = server.memory()
        notice = idle_notice(first, clients[1:], spec)
    finally:
        for client in clients:
            client.sock.close()
    return {"server": server.name, "folder": spec.label, "before": before, "after": after,
            "opened": opened, "connections": connections, "notice": notice}


#: The message APPENDed to tell the idling connections of.
NOTICE_MESSAGE = b"Subject: notice\r\nFrom: bench@bench.example\r\n\r\nnew mail\r\n"


def idle_notice(writer: Client, idlers: list[Client], spec: FolderSpec
                ) -> tuple[float | None, float | None, int]:
    """
    How long after another session's APPEND to the folder was sent the
    first and the last idling connection hear "* n EXISTS" (RFC 2177; the
    issue asks for within one second), in seconds, and how many heard
    nothing within 10 s.  (Dovecot falls back to polling every 30 s in
    processes beyond the system's inotify instances, 128 by default.)
    """
    waiting = {client.sock: client for client in idlers}
    heard = []
    with selectors.DefaultSelector() as selector:
        for sock in waiting:
            selector.register(sock, selectors.EVENT_READ)
        tag, sent = writer.send(f"APPEND {spec.name} {{{len(NOTICE_MESSAGE)}+}}\r\n"
                                + NOTICE_MESSAGE.decode())
        deadline = sent + 10
        while waiting and time.perf_counter() < deadline:
            for key, _ in selector.select(timeout=0.1):
                client = waiting[key.fileobj]
                client.buffer += key.fileobj.recv(CHUNK)
                if b" EXISTS\r\n" in client.buffer:
                    heard.append(time.perf_counter() - sent)
                    selector.unregister(key.fileobj)
                    del waiting[key.fileobj]
        writer.finish(tag, sent, "APPEND")
    return min(heard, default=None), max(heard, default=None), len(waiting)


# -- profiling -----------------------------------------------------------------


#: py-spy's samples per second.
RATE = 250


class Recording:
    """
    py-spy recording a process while the C{with} block runs: raw collapsed
    stacks, by function, only of the thread holding the GIL (mailsrv's
    threads share one GIL: what holds it is what the time goes to).
    """

    def __init__(self, py_spy: str, pid: int, output: Path):
        self.command = [py_spy, "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking",
                        "--gil", "--function", "--format", "raw", "--output", str(output)]
        self.output = output
        self.log = output.with_suffix(".log")

    def __enter__(self):
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while b"Sampling" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(f"py-spy did not start: {tail(self.log)}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def summarize(raw: Path, elapsed: float, top: int = 12) -> list[str]:
    """
    The hottest functions of a raw py-spy profile: by own time, and (for
    mailsrv's own) with their callees, in % of the samples.
    """
    own, inclusive = Counter(), Counter()
    total = pool = 0
    for line in raw.read_text("utf-8", "replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";") if stack else ["(no Python frame)"]
        samples = int(count)
        total += samples
        pool += samples if any("_bootstrap (" in f for f in frames) else 0
        own[frames[-1]] += samples
        for frame in set(frames):
            if "mailsrv/" in frame:
                inclusive[frame] += samples
    if not total:
        return ["    no samples"]
    lines = [f"    {total} samples: the GIL was held {100 * total / RATE / elapsed:.0f}% of "
             f"the time, {100 * pool / total:.0f}% of that by thread-pool threads"]
    lines += ["    own time:"] + [f"      {100 * n / total:5.1f}%  {frame}"
                                  for frame, n in own.most_common(top)]
    lines += ["    mailsrv functions with their callees:"] + [
        f"      {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def profile_mailsrv(server: Server, user: str, folders: list[FolderSpec], py_spy: str,
                    directory: Path) -> list[str]:
    """
    Record mailsrv during each operation on a fresh copy; the summaries.
    A warm operation is repeated until it has run 2 seconds.
    """
    lines = []
    for spec in folders:
        cases = [("first-access", [f"SELECT {spec.name}", HEADERS], False),
                 ("headers-warm", [HEADERS], True), ("bodies", [BODIES], True),
                 ("search", [SEARCH], True)]
        for key, commands, repeat in cases:
            output = directory / f"profile-{spec.name}-{key}.txt"
            client = Client(server.port)
            client.login(user)
            if repeat:
                client.command(f"SELECT {spec.name}")
            runs = 0
            with Recording(py_spy, server.process.pid, output):
                started = time.perf_counter()
                while True:
                    for text in commands:
                        client.command(text)
                    runs += 1
                    elapsed = time.perf_counter() - started
                    if not repeat or elapsed >= 2 or runs >= 200:
                        break
            client.logout()
            lines.append(f"  {key}, {spec.label}: {runs} run(s) in {elapsed:.2f} s "
                         f"({output.name})")
            lines += summarize(output, elapsed)
    return lines


# -- the run -------------------------------------------------------------------


def print_facts(directory: Path, servers: list[Server], mail: str) -> None:
    """
    What ran where: the machine, the code, the servers, the temp dir, C{mail}.
    """
    print(f"machine      {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    print(f"python       {platform.python_implementation()} {platform.python_version()}; "
          f"mailsrv code {source_state()}")
    print(f"servers      {', '.join(s.title for s in servers)}; TLS off, 127.0.0.1, "
          "SHA512-CRYPT passwords (5000 rounds)")
    print(f"temp dir     {directory} ({filesystem_of(directory)})")
    print(f"mail         {mail}")


def print_results(rows: list[dict], folders: list[FolderSpec], servers: list[Server],
                  rounds: int) -> bool:
    """
    The table of medians; whether every reply was right.
    """
    def pick(server, folder, op, key="seconds"):
        return [r[key] for r in rows if (r["server"], r["folder"], r["op"])
                == (server, folder, op) and key in r]

    names = [s.name for s in servers]
    print(f"\nMedian seconds over {rounds} round(s) (min-max); ratio = mailsrv / Dovecot; "
          "CPU = mailsrv's CPU seconds (all threads, median)")
    print(f"  {'operation':<26} {'folder':<13} {'mailsrv':>21} {'Dovecot':>21} "
          f"{'ratio':>6} {'target':>6} {'met':>4} {'CPU':>6}  check")
    correct = True
    for spec in folders:
        for key, label, target in OPERATIONS:
            cells, medians = [], {}
            for name in SERVERS:
                values = pick(name, spec.name, key) if name in names else []
                if values:
                    medians[name] = statistics.median(values)
                    cells.append(f"{medians[name]:.3f} ({min(values):.3f}-{max(values):.3f})")
                else:
                    cells.append("-")
            ratio = (medians["mailsrv"] / medians["dovecot"]
                     if len(medians) == 2 and medians["dovecot"] else None)
            met = "-" if target is None or ratio is None else \
                ("yes" if ratio <= target else "NO")
            cpu = pick("mailsrv", spec.name, key, "server_cpu")
            problems = Counter(f"{r['server']}: {p}" for r in rows
                               if (r["folder"], r["op"]) == (spec.name, key)
                               for p in r["problems"])
            correct &= not problems
            print(f"  {label:<26} {spec.label:<13} {cells[0]:>21} {cells[1]:>21} "
                  f"{f'{ratio:.1f}x' if ratio else '-':>6} "
                  f"{f'{target:.0f}x' if target else '-':>6} {met:>4} "
                  f"{f'{statistics.median(cpu):.2f}' if cpu else '-':>6}  "
                  + ("ok" if not problems else
                     "WRONG: " + "; ".join(f"{p} ({n}x)" for p, n in problems.items())))
    errors = [r for r in rows if r["op"] == "error"]
    for row in errors:
        print(f"  {row['server']} on {row['folder']}: FAILED: {row['problems'][0]}")
    print("  Client CPU in % of the elapsed time (median; near 100 the client is the limit):")
    for spec in folders:
        shares = []
        for key, _, _ in OPERATIONS:
            parts = []
            for name in names:
                values = [r["client_cpu"] / r["seconds"] for r in rows
                          if (r["server"], r["folder"], r["op"]) == (name, spec.name, key)
                          and r.get("seconds")]
                if values:
                    parts.append(f"{100 * statistics.median(values):.0f}")
            shares.append(f"{key} {'/'.join(parts)}")
        print(f"    {spec.name} ({'/'.join(names)}): {', '.join(shares)}")
    print_other_work(rows)
    return correct and not errors


def print_other_work(rows: list[dict]) -> None:
    """
    How much else the machine did during the measured operations, and a
    warning where that disturbed them.
    """
    timed = [r for r in rows if "other" in r and r["seconds"] >= JUDGED]
    if timed:
        worst = max(timed, key=lambda r: r["other"])
        print(f"  Other work on the machine (neither server nor client) during operations of "
              f"{JUDGED} s or more, % of one core: "
              f"median {100 * statistics.median(r['other'] for r in timed):.0f}, at most "
              f"{100 * worst['other']:.0f} ({worst['server']}, {worst['folder']}, "
              f"{worst['op']})")
        noisy = sum(r["other"] > NOISY for r in timed)
        if noisy:
            print(f"  WARNING: other work used more than {100 * NOISY:.0f}% of a core during "
                  f"{noisy} of {len(timed)} operations: those figures are disturbed; "
                  "rerun on an idle machine.")


def print_memory(results: list[dict]) -> None:
    print("\nIdle connections (LOGIN, SELECT, IDLE): memory of the server's processes, "
          "KB per connection (target for mailsrv: RSS < 100 KB)")
    print(f"  {'server':<8} {'folder':<15} {'conns':>5} {'opened':>7} {'RSS MB':>12} "
          f"{'RSS KB/conn':>11} {'met':>4} {'PSS KB/conn':>11} {'processes':>10}")
    for r in results:
        if "problem" in r:
            print(f"  {r['server']:<8} {r['folder']:<15} FAILED: {r['problem']}")
            continue
        (rss0, pss0, n0), (rss1, pss1, n1), count = r["before"], r["after"], r["connections"]
        per = (rss1 - rss0) / count
        met = ("yes" if per < 100 else "NO") if r["server"] == "mailsrv" else "-"
        print(f"  {r['server']:<8} {r['folder']:<15} {count:>5} {r['opened']:>6.1f}s "
              f"{f'{rss0 / 1024:.0f} -> {rss1 / 1024:.0f}':>12} {per:>11.0f} {met:>4} "
              f"{(pss1 - pss0) / count:>11.0f} {f'{n0} -> {n1}':>10}")
    print("\nIDLE notice: after another session's APPEND was sent, the first and the last "
          "idling connection heard EXISTS (target: within 1 s)")
    for r in results:
        if "notice" in r:
            first, last, untold = r["notice"]
            met = ("yes" if not untold and last < 1 else "NO") if r["server"] == "mailsrv" \
                else "-"
            heard = f"first {first * 1000:.0f} ms, last {last * 1000:.0f} ms" if last else ""
            missed = f"; {untold} heard nothing within 10 s" if untold else ""
            print(f"  {r['server']:<8} {r['folder']:<15} {r['connections']:>5} connections: "
                  f"{heard}{missed}  {met}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="each server measured this many times, each on a fresh copy "
                             "(default 3)")
    parser.add_argument("--small", type=int, default=10000,
                        help="messages of ~4 KB in INBOX (default 10000)")
    parser.add_argument("--large", type=int, default=1000,
                        help="messages of ~100 KB in Large (default 1000)")
    parser.add_argument("--connections", type=int, default=500,
                        help="idle connections for the memory figure (0: none; default 500)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated, from mailsrv, dovecot (default both)")
    parser.add_argument("--lf", action="store_true",
                        help="store messages with LF line ends (as Dovecot does) instead of "
                             "CRLF (as mailsrv does)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, record mailsrv with py-spy during each operation on "
                             "a fresh copy, print the hottest functions (implies --keep)")
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
    if args.rounds < 1 or args.small < 1 or args.large < 1 or args.connections < 0:
        parser.error("need --rounds, --small and --large >= 1, --connections >= 0")
    if args.profile and ("mailsrv" not in names or not Path(args.py_spy).is_file()):
        parser.error(f"--profile: needs mailsrv and py-spy ({args.py_spy}: pip install py-spy)")
    args.keep |= args.profile
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.connections + 200:
        parser.error(f"--connections: the file descriptor limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # servers inherit it

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    folders = [FolderSpec("INBOX", args.small, False), FolderSpec("Large", args.large, True)]
    users = [f"round{n}" for n in range(1, args.rounds + 1)]
    directory = Path(tempfile.mkdtemp(prefix="mailsrv-bench-imap-", dir=args.dir))
    directory.chmod(0o755)
    spread_subdirectories(directory)
    servers: list[Server] = []
    rows, memory = [], []
    correct = True
    try:
        password_hash = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash(PASSWORD)
        classes = {"mailsrv": Mailsrv, "dovecot": Dovecot}
        servers = [classes[name](directory, password_hash, args.connections, "imap")
                   for name in SERVERS if name in names]
        print_facts(directory, servers,
                    f"INBOX {args.small} messages of ~4 KB, Large {args.large} of ~100 KB; "
                    f"{'LF' if args.lf else 'CRLF'} line ends")
        started = time.perf_counter()
        master = directory / "master"
        truths = write_master(master, folders, args.lf)
        generated = time.perf_counter() - started
        for server in servers:
            server.add_users(dict.fromkeys(users + (["profile"] if args.profile else []),
                                           master))
        os.sync()
        print(f"prepared     in {generated:.1f} s (master), "
              f"{time.perf_counter() - started - generated:.1f} s (copies for "
              f"{len(servers)} server(s) x {len(users)} round(s))")
        for server in servers:
            server.start()
        for number, user in enumerate(users):
            for server in servers if number % 2 == 0 else servers[::-1]:
                rows += run_round(server, user, folders, truths)
        correct = print_results(rows, folders, servers, args.rounds)
        if args.connections:
            for spec, server in itertools.product(folders, servers):
                server.stop()
                server.start()
                try:
                    memory.append(idle_memory(server, users[0], spec, args.connections))
                except (OSError, IMAPError) as e:
                    memory.append({"server": server.name, "folder": spec.label,
                                   "problem": f"{type(e).__name__}: {e}"})
            print_memory(memory)
        if args.profile:
            mailsrv = next(s for s in servers if s.name == "mailsrv")
            print(f"\nProfile of mailsrv (py-spy at {RATE} Hz, samples of the thread holding "
                  "the GIL), on a fresh copy")
            print("\n".join(profile_mailsrv(mailsrv, "profile", folders, args.py_spy,
                                            directory)))
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
    if not correct or any("problem" in m for m in memory):
        print("\nFAILED: a server gave a wrong reply or failed (see above)")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
