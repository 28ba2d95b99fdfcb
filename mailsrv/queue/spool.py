"""
The outbound spool on disk.

Each queued message is two files in the queue folder: C{ID.eml}, the
message as it will be sent (never changed), and C{ID.json}, its envelope:
the sender and every recipient's state.  The message is written and
fsync'd first; the envelope's rename, fsync'd with the folder, is the
commit point.  A crash before it leaves a message without envelope, which
L{Spool.recover} removes (the client was never told 250, so it retries).
After each attempt the envelope is replaced the same way, so that a
restart neither loses a recipient nor sends again to one the far end
already accepted.

Every method blocks on the disk: the server calls them in a thread.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mailsrv.config import ConfigError
from mailsrv.files import fsync_directory, write_atomically
from mailsrv.logs import get_logger

log = get_logger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass
class QueuedRecipient:
    """
    One recipient's state.  C{reply} is the last answer (the far end's
    reply, or our own words when C{from_remote} is false).
    """

    address: str
    state: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    reply: str = ""
    status: str = ""
    remote_mta: str = ""
    from_remote: bool = False


@dataclass
class Envelope:
    """
    A queued message's envelope (RFC 5321 2.3.1), plus what the client
    must declare about its content (8BITMIME, SMTPUTF8).
    """

    id: str
    sender: str
    arrival: float
    size: int
    recipients: list[QueuedRecipient] = field(default_factory=list)
    eight_bit: bool = False
    smtputf8: bool = False

    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.state == PENDING]

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False,
                          indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        fields = json.loads(data)
        fields["recipients"] = [QueuedRecipient(**r) for r in fields["recipients"]]
        return cls(**fields)


class Spool:
    """
    The queue folder: C{ID.eml} and C{ID.json} per message, C{requests/}
    for operators' requests to a running server, and C{lock}, held by the
    one server that delivers from it.
    """

    def __init__(self, path: Path, owner: tuple[int, int] | None = None):
        """
        @param owner: C{(uid, gid)} to give the files written, for the admin
            command run as root beside a server that is not.
        """
        self.path = path
        self.requests = path / "requests"
        self.owner = owner
        self._lock_fd: int | None = None

    def prepare(self) -> None:
        self.requests.mkdir(mode=0o700, parents=True, exist_ok=True)

    def lock(self) -> bool:
        """
        Take the queue for this process (two servers sending from one
        queue would send everything twice).

        @return: whether it was free.
        """
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def lock_or_fail(self) -> None:
        """
        @raise ConfigError: if another process holds the queue.
        """
        self.prepare()
        if not self.lock():
            raise ConfigError(f"{self.path}: another mailsrv is already sending from this "
                              f"queue")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def message_path(self, queue_id: str) -> Path:
        return self.path / f"{queue_id}.eml"

    def envelope_path(self, queue_id: str) -> Path:
        return self.path / f"{queue_id}.json"

    def add(self, envelope: Envelope, message: bytes) -> None:
        """
        Make a new message durable: message, then envelope, then the folder.
        """
        write_atomically(self.message_path(envelope.id), message, sync_directory=False)
        try:
            write_atomically(self.envelope_path(envelope.id), envelope.to_json(),
                             sync_directory=False)
            fsync_directory(self.path)
        except BaseException:
            self.envelope_path(envelope.id).unlink(missing_ok=True)
            self.message_path(envelope.id).unlink(missing_ok=True)
            raise

    def save(self, envelope: Envelope) -> None:
        write_atomically(self.envelope_path(envelope.id), envelope.to_json(), owner=self.owner)

    def remove(self, queue_id: str) -> None:
        """
        Take a message out of the queue for good: the envelope first, so
        that a crash halfway leaves only an orphan message to clean up.
        """
        self.envelope_path(queue_id).unlink(missing_ok=True)
        fsync_directory(self.path)
        self.message_path(queue_id).unlink(missing_ok=True)

    def read(self, queue_id: str) -> Envelope:
        """
        @raise FileNotFoundError: if no such message is queued.
        """
        return Envelope.from_json(self.envelope_path(queue_id).read_bytes())

    def envelopes(self) -> list[Envelope]:
        """
        Every queued envelope that can be read, oldest first.
        """
        found = []
        for path in self.path.glob("*.json"):
            try:
                found.append(Envelope.from_json(path.read_bytes()))
            except FileNotFoundError:
                continue
            except (ValueError, TypeError, KeyError) as e:
                log.error("Unreadable queue envelope {path} left alone: {error}",
                          path=str(path), error=str(e))
        return sorted(found, key=lambda e: (e.arrival, e.id))

    def recover(self) -> list[Envelope]:
        """
        After a start or a crash: remove what never committed (temporary
        files, messages without envelope) and return the queue.
        """
        self.prepare()
        for path in self.path.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        envelopes = self.envelopes()
        known = {e.id for e in envelopes} | {p.stem for p in self.path.glob("*.json")}
        for path in self.path.glob("*.eml"):
            if path.stem not in known:
                log.info("Removed {path}: its envelope was never committed", path=str(path))
                path.unlink(missing_ok=True)
        complete = []
        for envelope in envelopes:
            if self.message_path(envelope.id).exists():
                complete.append(envelope)
            else:
                log.error("Queue envelope {id} has no message; removed", id=envelope.id)
                self.envelope_path(envelope.id).unlink(missing_ok=True)
        return complete
