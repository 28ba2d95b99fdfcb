"""
The loopback SMTP sink that bench/queue.py delivers to, in a process of its
own so that it never shares a GIL or an event loop with the sender.

It takes every message and keeps nothing but counts and times: when the
first MAIL came, when each message's final dot arrived (the moment before
its 250 is sent), how many connections were open at most, which recipient
domains were seen, and each message's C{X-Bench-Id} (to count duplicates).
Times are C{time.monotonic()}: CLOCK_MONOTONIC, the same clock in every
process of the machine.

It prints JSON lines on stdout: C{{"port": P}} once it listens,
C{{"first": T}} at the first MAIL, and the report C{{"report": ...}} once
C{--expect} messages have come.  It serves on until SIGTERM or SIGINT (so
that the sender's QUITs are answered), then prints the report if it has
not yet (fewer messages came) and exits.

Two implementations:

- C{minimal} (default): an C{asyncio.Protocol} state machine: EHLO (with
  PIPELINING, 8BITMIME, SIZE), HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT;
  every reply is 250 (354 to DATA, 221 to QUIT, 502 to anything else),
  the replies to one read go out in one write, and the end of data is
  found across reads;
- C{aiosmtpd}: aiosmtpd's C{SMTP} with a handler that counts (it adds
  PIPELINING to EHLO, which aiosmtpd handles but does not announce), for
  comparison: its coroutines per command cost about 4 times the CPU per
  message.

    python -P bench/queue_sink.py --expect 2000 [--impl aiosmtpd]

(C{-P}: this folder's queue.py must not hide the standard library's.)
"""

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections import Counter

HOSTNAME = "sink.bench.invalid"
MAX_SIZE = 52428800
_BENCH_ID = re.compile(rb"^X-Bench-Id: (\S+)", re.MULTILINE)
#: Where the headers (and so the X-Bench-Id) of a message are searched.
HEAD = 4096


class Recorder:
    """
    What the sink saw, and the lines it prints about it.
    """

    def __init__(self, expect: int):
        self.expect = expect
        self.first_mail: float | None = None
        self.ends: list[float] = []
        self.ids: Counter[bytes] = Counter()
        self.domains: Counter[str] = Counter()
        self.open = 0
        self.max_open = 0
        self.reported = False

    def connected(self) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)

    def disconnected(self) -> None:
        self.open -= 1

    def mail(self) -> None:
        if self.first_mail is None:
            self.first_mail = time.monotonic()
            emit({"first": self.first_mail})

    def message(self, data, recipients: list[str]) -> None:
        self.ends.append(time.monotonic())
        match = _BENCH_ID.search(data, 0, HEAD)
        self.ids[match.group(1) if match else b""] += 1
        for recipient in recipients:
            self.domains[recipient.rpartition("@")[2].lower()] += 1
        if len(self.ends) == self.expect:
            self.report()

    def report(self) -> None:
        if self.reported:
            return
        self.reported = True
        emit({"report": {
            "messages": len(self.ends), "first_mail": self.first_mail, "ends": self.ends,
            "distinct": len(self.ids) - (b"" in self.ids), "without_id": self.ids[b""],
            "duplicates": sum(n - 1 for ident, n in self.ids.items() if ident and n > 1),
            "domains": dict(self.domains), "max_open": self.max_open}})


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def recipient_of(line: bytes) -> str:
    """
    The address in C{RCPT TO:<address> ...}.
    """
    text = line[8:].decode("utf-8", "replace").strip()
    return text[1:text.find(">")] if text.startswith("<") else text.split(" ", 1)[0]


EHLO_REPLY = (f"250-{HOSTNAME}\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
              f"250 SIZE {MAX_SIZE}\r\n").encode()
REPLIES = {b"HELO": b"250 " + HOSTNAME.encode() + b"\r\n", b"EHLO": EHLO_REPLY,
           b"MAIL": b"250 2.1.0 Ok\r\n", b"RCPT": b"250 2.1.5 Ok\r\n",
           b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n", b"RSET": b"250 2.0.0 Ok\r\n",
           b"NOOP": b"250 2.0.0 Ok\r\n", b"QUIT": b"221 2.0.0 Bye\r\n"}
UNKNOWN = b"502 5.5.2 Command not recognized\r\n"
QUEUED = b"250 2.0.0 Ok: queued\r\n"


class MinimalSession(asyncio.Protocol):
    """
    One connection to the minimal sink.  In DATA, C{buffer} starts with the
    CRLF that ended the DATA command, so that the end of data is always a
    C{CRLF.CRLF} in it, even for an empty message; C{scanned} is where the
    next search starts.
    """

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.transport = None
        self.buffer = bytearray()
        self.in_data = False
        self.scanned = 0
        self.recipients: list[str] = []

    def connection_made(self, transport):
        self.transport = transport
        self.recorder.connected()
        transport.write(f"220 {HOSTNAME} ESMTP bench sink\r\n".encode())

    def connection_lost(self, exc):
        self.recorder.disconnected()

    def data_received(self, data: bytes):
        buffer = self.buffer
        buffer += data
        out = []
        closing = False
        while True:
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n", self.scanned)
                if end < 0:
                    self.scanned = max(0, len(buffer) - 4)
                    break
                self.recorder.message(buffer, self.recipients)
                del buffer[:end + 5]
                self.in_data = False
                self.recipients = []
                out.append(QUEUED)
                continue
            end = buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(buffer[:end + 1])
            del buffer[:end + 1]
            verb = line[:4].upper()
            out.append(REPLIES.get(verb, UNKNOWN))
            if verb == b"MAIL":
                self.recorder.mail()
                self.recipients = []
            elif verb == b"RCPT":
                self.recipients.append(recipient_of(line))
            elif verb == b"DATA":
                self.in_data = True
                buffer[:0] = b"\r\n"
                self.scanned = 0
            elif verb == b"RSET":
                self.recipients = []
            elif verb == b"QUIT":
                closing = True
                break
        if out:
            self.transport.write(b"".join(out))
        if closing:
            self.transport.close()


class CountingHandler:
    """
    An aiosmtpd handler that records what L{MinimalSession} records.
    """

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [responses[0], "250-PIPELINING", *responses[1:]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.recorder.mail()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.recorder.message(envelope.original_content, envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(args.expect)
    if args.impl == "aiosmtpd":
        from aiosmtpd.smtp import SMTP

        class CountingSMTP(SMTP):
            def connection_made(self, transport):
                recorder.connected()
                super().connection_made(transport)

            def connection_lost(self, exc):
                recorder.disconnected()
                super().connection_lost(exc)

        handler = CountingHandler(recorder)

        def factory():
            return CountingSMTP(handler, hostname=HOSTNAME, data_size_limit=MAX_SIZE,
                                decode_data=False)
    else:
        def factory():
            return MinimalSession(recorder)
    server = await loop.create_server(factory, "127.0.0.1", args.port, backlog=1024)
    emit({"port": server.sockets[0].getsockname()[1]})
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        recorder.report()
        server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--expect", type=int, required=True,
                        help="print the report once this many messages have come")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--impl", choices=("minimal", "aiosmtpd"), default="minimal")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
