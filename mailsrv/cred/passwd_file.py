"""
Dovecot's passwd-file: one C{user@domain:{SCHEME}hash[:uid:gid:gecos:home:...]}
line per user, C{#} comments and blank lines allowed.

Reading keeps the other fields and the comments, so that editing a file an
operator brought from Dovecot changes only the lines it must.  Writes are
atomic (temporary file, fsync, rename) and serialized by a lock file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailsrv.cred.passwords import UnsupportedHash, split_scheme
from mailsrv.files import write_atomically


class PasswdError(Exception):
    """
    An edit that cannot be made: adding a user that exists, changing one
    that does not.
    """


class BadAddress(ValueError):
    """
    A login name that cannot be a passwd-file user.
    """


def canonical_user(name: str, default_domain: str) -> str:
    """
    The passwd-file key for a login name: lower-cased, with
    C{@default_domain} added when the name has no domain.

    @raise BadAddress: for names that no account can have.
    """
    name = name.strip().lower()
    if "@" not in name and default_domain:
        name = f"{name}@{default_domain.lower()}"
    local, _, domain = name.rpartition("@")
    if not local or not domain or any(c in name for c in ":#\0") or not name.isprintable():
        raise BadAddress(f"not a valid user name: {name!r}")
    if any(c.isspace() for c in name):
        raise BadAddress(f"not a valid user name: {name!r}")
    return name


@dataclass(frozen=True)
class PasswdEntry:
    """
    One user's line: the address, its stored password, the other fields.
    """

    user: str
    password: str
    extra: tuple[str, ...] = ()

    def line(self) -> str:
        return ":".join((self.user, self.password, *self.extra))


@dataclass(frozen=True)
class ParsedPasswd:
    """
    The users of a passwd-file, and the lines that could not be used.
    """

    users: dict[str, PasswdEntry]
    problems: tuple[str, ...]


def _split_line(line: str) -> PasswdEntry:
    user, _, rest = line.partition(":")
    password, _, extra = rest.partition(":")
    return PasswdEntry(user.strip().lower(), password, tuple(extra.split(":")) if extra else ())


def _is_comment(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def parse_passwd(text: str, source: str = "passwd-file") -> ParsedPasswd:
    """
    Parse a passwd-file; bad lines are reported, never fatal for the others.
    """
    users: dict[str, PasswdEntry] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if _is_comment(line):
            continue
        entry = _split_line(line)
        try:
            canonical_user(entry.user, "")
            split_scheme(entry.password)
        except (BadAddress, UnsupportedHash) as e:
            problems.append(f"{source}:{number}: {e}; line ignored")
            continue
        if entry.user in users:
            problems.append(f"{source}:{number}: {entry.user} is listed again; line ignored")
            continue
        users[entry.user] = entry
    return ParsedPasswd(users, tuple(problems))


def read_passwd(path: Path) -> ParsedPasswd:
    """
    Read and parse C{path}; a missing file has no users.
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    except UnicodeDecodeError:
        return ParsedPasswd({}, (f"{path}: not UTF-8 text; no users loaded",))
    return parse_passwd(text, str(path))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_lines(path: Path, lines: list[str]) -> None:
    """
    Replace the file atomically, keeping its mode and owner.  A new file is
    private and, when root writes it, belongs to the owner of its folder, so
    that C{sudo mailsrv user add} leaves a file the server can still read.
    """
    try:
        st = path.stat()
        mode = st.st_mode & 0o777
    except FileNotFoundError:
        st = path.parent.stat()
        mode = 0o600
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    write_atomically(path, "".join(line + "\n" for line in lines).encode("utf-8"), mode, owner)


def set_password(path: Path, user: str, stored_password: str, *, create: bool) -> None:
    """
    Add C{user} (C{create=True}) or change an existing user's password.

    @raise PasswdError: when adding a user that exists, or changing one
        that does not.
    """
    with _locked(path):
        lines = _read_lines(path)
        for index, line in enumerate(lines):
            entry = _split_line(line)
            if not _is_comment(line) and entry.user == user:
                if create:
                    raise PasswdError(f"{user} already exists")
                lines[index] = PasswdEntry(user, stored_password, entry.extra).line()
                break
        else:
            if not create:
                raise PasswdError(f"{user} does not exist")
            lines.append(PasswdEntry(user, stored_password).line())
        _write_lines(path, lines)


def delete_user(path: Path, user: str) -> None:
    """
    Remove C{user}'s line.

    @raise PasswdError: if there is no such user.
    """
    with _locked(path):
        lines = _read_lines(path)
        kept = [line for line in lines if _is_comment(line) or _split_line(line).user != user]
        if len(kept) == len(lines):
            raise PasswdError(f"{user} does not exist")
        _write_lines(path, kept)
