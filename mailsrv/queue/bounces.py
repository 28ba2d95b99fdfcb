"""
Telling senders what could not be delivered: one DSN (RFC 3464) per
message and attempt that ended recipients, to the envelope sender.

A sender in a local domain gets it in their mailbox at once; any other
gets it through the queue, from the null sender, so that a bounce can
never bounce back (RFC 5321 4.5.5).  The queue sends no bounce for mail
from the null sender at all.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

from mailsrv.logs import get_logger
from mailsrv.queue.dsn import FailedRecipient, build_bounce
from mailsrv.queue.spool import Envelope, QueuedRecipient

log = get_logger(__name__)

#: The original's header section is read from at most this much of it.
HEADER_READ = 1024 * 1024


def _read_start(path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_READ)


class Bouncer:
    """
    @param deliver_local: C{deliver_local(address, message)} stores a
        message for a local address (L{Deferred}), or fails with
        L{LookupError} if there is no such user.
    @param is_local: whether an address's domain is one of ours.
    @param enqueue: the queue's C{enqueue}, for remote senders.
    """

    def __init__(self, hostname: str, spool, run, *,
                 deliver_local: Callable[[str, bytes], Deferred],
                 is_local: Callable[[str], bool],
                 enqueue: Callable[..., Deferred]):
        self._hostname = hostname
        self._spool = spool
        self._run = run
        self._deliver_local = deliver_local
        self._is_local = is_local
        self._enqueue = enqueue

    def bounce(self, envelope: Envelope, failed: list[QueuedRecipient]) -> Deferred:
        return Deferred.fromCoroutine(self._bounce(envelope, failed))

    async def _bounce(self, envelope: Envelope, failed: list[QueuedRecipient]) -> None:
        original = await self._run(_read_start, self._spool.message_path(envelope.id))
        report = build_bounce(
            hostname=self._hostname, queue_id=envelope.id, sender=envelope.sender,
            arrival=envelope.arrival, original=original,
            failed=[FailedRecipient(r.address, r.status or "5.0.0", r.reply, r.remote_mta,
                                    r.last_attempt, r.from_remote) for r in failed])
        sender = envelope.sender
        if self._is_local(sender):
            try:
                await self._deliver_local(sender, b"Return-Path: <>\r\n" + report)
            except LookupError as e:
                # The sender's own domain says there is no such mailbox:
                # nobody is left to tell.  Any other failure goes up, and the
                # queue keeps the message to bounce it again later.
                log.info("Bounce for {id} to <{sender}> dropped: {error}", id=envelope.id,
                         sender=sender, error=str(e))
                return
            where = "delivered"
        else:
            bounce_id = await self._enqueue("", [sender], report)
            where = f"queued as {bounce_id}"
        log.info("Bounce for {id} to <{sender}> {where}: {recipients}", id=envelope.id,
                 sender=sender, where=where,
                 recipients=",".join(r.address for r in failed))
