"""
The C{mailsrv} admin command: users, configuration check, certificates,
DKIM keys, the outbound queue.

It finds the configuration and the data folder exactly as C{twistd mailsrv}
does (same C{--config}/C{--data} options, same environment variables, same
defaults), so that it changes the server running beside it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from functools import partial
from pathlib import Path

from mailsrv.config import CONFIG_ENV, DATA_ENV, ConfigError, Settings, load_settings
from mailsrv.cred.passwd_file import (
    BadAddress,
    PasswdError,
    canonical_user,
    delete_user,
    read_passwd,
    set_password,
)
from mailsrv.cred.passwords import hash_password
from mailsrv.queue.dkim import DKIMSigner, check_selector, create_key, txt_record
from mailsrv.queue.spool import PENDING, Envelope, Spool
from mailsrv.service import server_tls
from mailsrv.tls import create_self_signed, self_signed_paths


class CommandError(Exception):
    """
    A failure to report in one line, with exit status 1.
    """


def _read_password(stdin) -> str:
    """
    Ask twice on a terminal; otherwise take the first line of standard input.
    """
    if stdin.isatty():
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise CommandError("the passwords do not match")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("empty password")
    return password


def _local_domain(settings: Settings, domain: str) -> str:
    domain = domain.lower()
    if domain not in settings.domains:
        where = settings.source or "the configuration"
        raise CommandError(f"{domain} is not a local domain; add "
                           f"[domains.\"{domain}\"] to {where}")
    return domain


def _account(settings: Settings, address: str) -> str:
    try:
        user = canonical_user(address, settings.default_domain)
    except BadAddress as e:
        raise CommandError(str(e)) from None
    _local_domain(settings, user.rpartition("@")[2])
    return user


def _passwd_path(settings: Settings) -> Path:
    path = Path(settings.auth.passwd_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def user_set_password(settings: Settings, args, stdin, stdout, *, create: bool) -> None:
    user = _account(settings, args.address)
    stored = hash_password(_read_password(stdin), settings.auth.hash_scheme)
    set_password(_passwd_path(settings), user, stored, create=create)
    print(f"Added {user}." if create else f"Changed the password of {user}.", file=stdout)


def user_del(settings: Settings, args, stdin, stdout) -> None:
    user = _account(settings, args.address)
    delete_user(Path(settings.auth.passwd_file), user)
    print(f"Deleted {user} (their mail is kept).", file=stdout)


def user_list(settings: Settings, args, stdin, stdout) -> None:
    parsed = read_passwd(Path(settings.auth.passwd_file))
    for problem in parsed.problems:
        print(f"mailsrv: warning: {problem}", file=sys.stderr)
    for user in sorted(parsed.users):
        print(user, file=stdout)


def config_check(settings: Settings, args, stdin, stdout) -> None:
    if settings.tls.certificate is not None:
        server_tls(settings)
    DKIMSigner(settings.domains)
    print(f"{settings.source or 'built-in configuration'}: OK", file=stdout)


def cert_create(settings: Settings, args, stdin, stdout) -> None:
    cert, key = self_signed_paths(settings.data_dir)
    cert, key = Path(args.cert or cert).absolute(), Path(args.key or key).absolute()
    existing = [str(p) for p in (cert, key) if p.exists()]
    if existing and not args.force:
        raise CommandError(f"{', '.join(existing)} already exists; use --force to replace")
    try:
        create_self_signed(cert, key, args.hostname.lower())
    except OSError as e:
        raise CommandError(f"{e.filename}: {e.strerror}") from None
    print(f"Wrote {cert} and {key} for {args.hostname}.", file=stdout)


def dkim_create(settings: Settings, args, stdin, stdout) -> None:
    domain = _local_domain(settings, args.domain)
    problem = check_selector(args.selector)
    if problem:
        raise CommandError(f"--selector {args.selector!r}: {problem}")
    relative = Path("dkim") / f"{domain}.{args.selector}.pem"
    path = settings.data_dir / relative
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        value = create_key(path, args.bits, replace=args.force)
    except FileExistsError:
        raise CommandError(f"{path} already exists; use --force to replace it") from None
    except ValueError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"{e.filename}: {e.strerror}") from None
    where = settings.source or "the configuration file"
    print(f"Wrote a {args.bits}-bit DKIM key to {path}.\n\n"
          f"Publish this TXT record in the DNS zone of {domain}:\n\n"
          f"{txt_record(domain, args.selector, value)}\n\n"
          f"Then add to [domains.\"{domain}\"] in {where}:\n\n"
          f"dkim_key = \"{relative}\"\n"
          f"dkim_selector = \"{args.selector}\"", file=stdout)


#: Seconds the queue commands wait for a running server to take a request.
REQUEST_WAIT = 5.0

_QUEUE_ID = re.compile(r"[A-Za-z0-9]{1,64}")


def _queue(settings: Settings) -> Spool:
    """
    The queue, writing files as its owner (the server's user when the
    command runs as root).
    """
    path = Path(settings.queue.path)
    owner = None
    if os.geteuid() == 0 and path.is_dir():
        st = path.stat()
        owner = (st.st_uid, st.st_gid)
    return Spool(path, owner)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _queued(spool: Spool, queue_id: str) -> Envelope:
    if not _QUEUE_ID.fullmatch(queue_id):
        raise CommandError(f"{queue_id!r} is not a queue ID")
    try:
        return spool.read(queue_id)
    except FileNotFoundError:
        raise CommandError(f"no message {queue_id} in the queue") from None


def queue_list(settings: Settings, args, stdin, stdout) -> None:
    spool = _queue(settings)
    envelopes = spool.envelopes() if spool.path.is_dir() else []
    for envelope in envelopes:
        print(f"{envelope.id}  {envelope.size:>9}  {_when(envelope.arrival)}  "
              f"<{envelope.sender}>", file=stdout)
        for recipient in envelope.pending():
            last = f": {recipient.reply}" if recipient.reply else ""
            print(f"    {recipient.address}  (tries {recipient.attempts}, next "
                  f"{_when(recipient.next_attempt)}){last}", file=stdout)
    waiting = sum(len(e.pending()) for e in envelopes)
    print(f"{len(envelopes)} messages, {waiting} recipients waiting.", file=stdout)


def queue_show(settings: Settings, args, stdin, stdout) -> None:
    spool = _queue(settings)
    envelope = _queued(spool, args.id)
    print(f"Queue ID: {envelope.id}\nSender: <{envelope.sender}>\n"
          f"Arrived: {_when(envelope.arrival)}\nSize: {envelope.size}", file=stdout)
    for r in envelope.recipients:
        print(f"Recipient: {r.address}\n    state {r.state}, tries {r.attempts}, last "
              f"{_when(r.last_attempt) if r.last_attempt else '-'}, next "
              f"{_when(r.next_attempt) if r.state == PENDING else '-'}", file=stdout)
        if r.reply:
            print(f"    {r.status} {r.remote_mta or 'local'}: {r.reply}", file=stdout)
    try:
        with spool.message_path(envelope.id).open("rb") as f:
            header = f.read(64 * 1024).split(b"\r\n\r\n", 1)[0]
    except FileNotFoundError:
        header = b"(message file missing)"
    print("\n" + header.decode("utf-8", "replace").replace("\r\n", "\n"), file=stdout)


def _request(spool: Spool, action: str, queue_id: str, stdout) -> None:
    """
    Ask the running server (it holds the queue's lock) through a file in
    requests/; without a server, do it here.
    """
    spool.prepare()
    if spool.lock():
        try:
            targets = spool.envelopes() if queue_id == "all" else [spool.read(queue_id)]
            for envelope in targets:
                if action == "delete":
                    spool.remove(envelope.id)
                else:
                    for recipient in envelope.pending():
                        recipient.next_attempt = 0.0
                    spool.save(envelope)
        finally:
            spool.unlock()
        done = "Deleted" if action == "delete" else "Scheduled for the server's next start:"
        print(f"{done} {queue_id}.", file=stdout)
        return
    request = spool.requests / f"{action}-{queue_id}"
    request.touch()
    if spool.owner is not None:
        os.chown(request, *spool.owner)
    deadline = time.monotonic() + REQUEST_WAIT
    while request.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if request.exists():
        print(f"Asked the server to {action} {queue_id}; it has not taken the request yet.",
              file=stdout)
    else:
        print(f"The server took the request to {action} {queue_id}.", file=stdout)


def queue_retry(settings: Settings, args, stdin, stdout) -> None:
    spool = _queue(settings)
    if args.id:
        _queued(spool, args.id)
    _request(spool, "retry", args.id or "all", stdout)


def queue_delete(settings: Settings, args, stdin, stdout) -> None:
    spool = _queue(settings)
    _queued(spool, args.id)
    _request(spool, "delete", args.id, stdout)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help=f"TOML config file (default: ${CONFIG_ENV}, else built-in)")
    common.add_argument("-d", "--data", default=argparse.SUPPRESS,
                        help=f"data folder (default: ${DATA_ENV}, else server.data_dir)")
    parser = argparse.ArgumentParser(prog="mailsrv", parents=[common],
                                     description="Administer a mailsrv mail server.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    user = commands.add_parser("user", help="add, change, delete and list users")
    user_commands = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, summary in (
        ("add", partial(user_set_password, create=True),
         "add a user; the password is asked for, or read from stdin"),
        ("passwd", partial(user_set_password, create=False), "change a user's password"),
        ("del", user_del, "delete a user (their mail stays on disk)"),
    ):
        sub = user_commands.add_parser(name, parents=[common], help=summary)
        sub.add_argument("address", help="user@domain (the domain may be left out)")
        sub.set_defaults(handler=handler)
    user_commands.add_parser("list", parents=[common], help="list users").set_defaults(
        handler=user_list)

    config = commands.add_parser("config", help="check the configuration")
    check = config.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "check", parents=[common], help="validate a config file as the server would")
    check.add_argument("path", nargs="?", help="config file (default: as the server finds it)")
    check.set_defaults(handler=config_check)

    queue = commands.add_parser("queue", help="look after the outbound queue")
    queue_commands = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    queue_commands.add_parser("list", parents=[common], help="list queued messages").set_defaults(
        handler=queue_list)
    for name, handler, summary, optional in (
        ("show", queue_show, "show a message's envelope, state and headers", False),
        ("retry", queue_retry, "try again now (every message without an ID)", True),
        ("delete", queue_delete, "take a message out of the queue, unsent", False),
    ):
        sub = queue_commands.add_parser(name, parents=[common], help=summary)
        sub.add_argument("id", nargs="?" if optional else None, help="queue ID")
        sub.set_defaults(handler=handler)

    cert = commands.add_parser("cert", help="make certificates")
    create = cert.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "create", parents=[common], help="write a self-signed certificate and key")
    create.add_argument("hostname", help="the name clients connect to")
    create.add_argument("--cert", help="certificate path (default: DATA/tls/cert.pem)")
    create.add_argument("--key", help="key path (default: DATA/tls/key.pem)")
    create.add_argument("--force", action="store_true", help="replace existing files")
    create.set_defaults(handler=cert_create)

    dkim = commands.add_parser("dkim", help="make DKIM signing keys")
    create = dkim.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "create", parents=[common], help="write a DKIM key for a local domain and print "
        "its DNS record")
    create.add_argument("domain", help="a local domain")
    create.add_argument("--selector", default="mailsrv",
                        help="the key's name in the DNS (default: mailsrv)")
    create.add_argument("--bits", type=int, default=2048,
                        help="RSA key size, 1024 to 4096 (default: 2048)")
    create.add_argument("--force", action="store_true",
                        help="replace an existing key (publish its new record before "
                        "the server loads it)")
    create.set_defaults(handler=dkim_create)
    return parser


def main(argv=None, *, stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    args = _parser().parse_args(argv)
    config = getattr(args, "path", None) or getattr(args, "config", None)
    try:
        settings = load_settings(config, getattr(args, "data", None))
        args.handler(settings, args, stdin, stdout)
    except (ConfigError, CommandError, PasswdError) as e:
        print(f"mailsrv: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
