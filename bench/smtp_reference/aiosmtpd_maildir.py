"""
Reference server for bench/smtp.py: aiosmtpd (PyPI) on 127.0.0.1 with a
handler that delivers every message durably to one Maildir before it
answers 250: written to tmp/, fsync'd, renamed into new/ and new/ fsync'd.

    python bench/smtp_reference/aiosmtpd_maildir.py --port 2526 --maildir DIR
    python bench/smtp_reference/aiosmtpd_maildir.py ... --writes inline

It runs in its own process with its own event loop.  By default the
blocking file work runs in a thread pool (--threads, like mailsrv's store
threads), so sessions overlap while one waits for fsync; --writes inline
does it on the event loop instead (one delivery at a time).  Recipients
outside --domain are refused with 550.  SIGTERM or SIGINT stops it.
"""

import argparse
import asyncio
import itertools
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.smtp import SMTP


class MaildirHandler:
    """
    aiosmtpd handler: accept recipients of one domain, deliver DATA to one
    Maildir (LF line ends, as a Maildir holds them).
    """

    def __init__(self, maildir: Path, domain: str, executor: ThreadPoolExecutor | None):
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.tmp = maildir / "tmp"
        self.new = maildir / "new"
        self.domain = domain.lower()
        self.executor = executor
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.pid = os.getpid()
        self.counter = itertools.count()
        self.new_fd = os.open(self.new, os.O_RDONLY | os.O_DIRECTORY)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.rpartition("@")[2].lower() != self.domain:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = (envelope.original_content or envelope.content).replace(b"\r\n", b"\n")
        try:
            if self.executor is None:
                self.deliver(data)
            else:
                await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                 self.deliver, data)
        except OSError as e:
            return f"451 4.3.0 Cannot store the message: {e.strerror or e}"
        return "250 2.0.0 OK: stored"

    def deliver(self, data: bytes) -> None:
        """
        tmp/ -> fsync -> rename into new/ -> fsync new/.
        """
        now = time.time()
        name = (f"{int(now)}.M{int(now % 1 * 1e6)}P{self.pid}Q{next(self.counter)}"
                f".{self.host},S={len(data)}")
        tmp = self.tmp / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.new / name)
        os.fsync(self.new_fd)


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    executor = None if args.writes == "inline" else ThreadPoolExecutor(args.threads)
    handler = MaildirHandler(Path(args.maildir), args.domain, executor)

    def factory():
        return SMTP(handler, hostname=args.hostname, ident="aiosmtpd bench reference",
                    data_size_limit=args.max_size, decode_data=False)

    server = await loop.create_server(factory, "127.0.0.1", args.port, backlog=1024,
                                      reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        if executor is not None:
            executor.shutdown(wait=True)
        os.close(handler.new_fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True, help="the Maildir to deliver to")
    parser.add_argument("--domain", default="bench.example")
    parser.add_argument("--hostname", default="aiosmtpd.bench.invalid")
    parser.add_argument("--max-size", type=int, default=26214400)
    parser.add_argument("--writes", choices=("thread", "inline"), default="thread")
    parser.add_argument("--threads", type=int, default=16)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
