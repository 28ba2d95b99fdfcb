"""
The queue runner: takes mail for other domains into the spool, sends it
to each recipient's next hop, retries what failed temporarily with
exponential back-off, and hands what failed for good (or too long) to the
bouncer.

Recipients of one message that share a next hop go in one transaction;
messages to one next hop share its connections, at most
C{max_per_destination} at once and C{max_concurrent} in all.
"""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall

from mailsrv.config import QueueSettings
from mailsrv.logs import get_logger
from mailsrv.queue.client import (
    CHUNK,
    ClientSettings,
    ConnectionFailed,
    OutboundMessage,
    SMTPReply,
    open_session,
)
from mailsrv.queue.routing import Destination, Router, RoutingError
from mailsrv.queue.spool import DELIVERED, FAILED, Envelope, QueuedRecipient, Spool

log = get_logger(__name__)

#: Seconds between looks at C{requests/} for operators' requests.
REQUEST_POLL = 1.0


@dataclass
class Job:
    """
    Some recipients of one message, for one destination.
    """

    envelope: Envelope
    destination: Destination
    recipients: list[QueuedRecipient]
    done: Deferred = field(default_factory=Deferred)


@dataclass(frozen=True)
class Outcome:
    """
    What became of recipients in one attempt.
    """

    reply: str
    status: str
    delivered: bool = False
    permanent: bool = False
    remote_mta: str = ""
    from_remote: bool = False

    @classmethod
    def from_reply(cls, reply: SMTPReply, where: str) -> Outcome:
        return cls(str(reply), reply.status, delivered=reply.positive,
                   permanent=reply.permanent, remote_mta=where, from_remote=True)


class _MessageReader:
    """
    Reads a queued message in chunks for the client, opening it and reading
    in a thread: the reactor never waits for the disk.
    """

    def __init__(self, path, run):
        self._path = path
        self._run = run
        self._file = None
        self._left: int | None = None

    def _next_chunk(self) -> bytes:
        if self._file is None:
            self._file = open(self._path, "rb")
            self._left = os.fstat(self._file.fileno()).st_size
        chunk = self._file.read(CHUNK)
        self._left = self._left - len(chunk) if chunk else 0
        return chunk

    def read(self) -> Deferred:
        if self._left == 0:
            return succeed(b"")
        return self._run(self._next_chunk)

    def close(self):
        if self._file is not None:
            self._file.close()


class QueueRunner(MultiService):
    """
    The outbound queue of a running server.

    @param bounce: C{bounce(envelope, failed_recipients)} returns a
        L{Deferred} that fires once the sender has been told (a DSN
        delivered or queued).
    @param sign: C{sign(message, sender)} returns the header to put in
        front of a message (DKIM), called in a thread.
    """

    def __init__(self, spool: Spool, router: Router, settings: QueueSettings,
                 client: ClientSettings, run, reactor, *,
                 bounce: Callable[[Envelope, list[QueuedRecipient]], Deferred],
                 sign: Callable[[bytes, str], bytes] = lambda message, sender: b""):
        super().__init__()
        self.spool = spool
        self._router = router
        self._settings = settings
        self._client = client
        self._run = run
        self._reactor = reactor
        self._bounce = bounce
        self._sign = sign
        self.envelopes: dict[str, Envelope] = {}
        self._timers: dict = {}
        self._busy: set[str] = set()
        self._disk: dict[str, Deferred] = {}
        self._waiting: dict[str, deque[Job]] = {}
        self._connections: dict[str, int] = {}
        self._total = 0
        self._sessions: set = set()
        self._recovering: Deferred | None = None
        self._recovery_waiters: list[Deferred] = []
        self._requests = LoopingCall(self._poll_requests)
        self._requests.clock = reactor

    # Taking mail in

    def enqueue(self, sender: str, recipients: list[str], message, *,
                smtputf8: bool = False, queue_id: str | None = None) -> Deferred:
        """
        Queue a message durably; fires with its queue ID once it is on disk
        (only then may the submission be answered 250).

        @param message: the message's bytes, or a reader of them.
        """
        queue_id = queue_id or uuid.uuid4().hex[:16].upper()
        d = self._recovery()
        d.addCallback(lambda _: self._run(self._write, queue_id, sender, recipients, message,
                                          smtputf8))
        d.addCallback(self._queued)
        return d

    def _recovery(self) -> Deferred:
        """
        Fires once start-up recovery is over: until then it may remove the
        temporary files of a message being written.
        """
        if self._recovering is None:
            return succeed(None)
        waiter = Deferred()
        self._recovery_waiters.append(waiter)
        return waiter

    def _write(self, queue_id, sender, recipients, message, smtputf8) -> Envelope:
        if not isinstance(message, bytes):
            message = b"".join(iter(lambda: message.read(CHUNK), b""))
        message = self._sign(message, sender) + message
        end = message.find(b"\r\n\r\n")
        header = message if end == -1 else message[:end]  # no copy of the body
        envelope = Envelope(
            queue_id, sender, self._reactor.seconds(), len(message),
            [QueuedRecipient(r) for r in recipients], eight_bit=not message.isascii(),
            smtputf8=smtputf8 and not (sender.isascii() and header.isascii()
                                       and all(r.isascii() for r in recipients)))
        self.spool.add(envelope, message)
        return envelope

    def _queued(self, envelope: Envelope) -> str:
        log.info("Queued {id} from <{sender}> for {recipients} ({size} octets)",
                 id=envelope.id, sender=envelope.sender, size=envelope.size,
                 recipients=",".join(r.address for r in envelope.recipients))
        self.envelopes[envelope.id] = envelope
        self._schedule(envelope)
        return envelope.id

    # Service

    def startService(self):
        super().startService()
        self._recovering = self._run(self.spool.recover)
        self._recovering.addErrback(self._recovery_failed).addCallback(self._recovered)
        self._requests.start(REQUEST_POLL, now=False)

    def _recovery_failed(self, failure) -> list[Envelope]:
        log.failure("Could not read the queue; new mail is still taken", failure)
        return []

    def _recovered(self, envelopes: list[Envelope]):
        self._recovering = None
        for envelope in envelopes:
            self.envelopes.setdefault(envelope.id, envelope)
        for envelope in list(self.envelopes.values()):
            self._schedule(envelope)
        if envelopes:
            log.info("Queue: {count} messages waiting", count=len(envelopes))
        waiters, self._recovery_waiters = self._recovery_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def stopService(self):
        """
        Stop sending; what was in flight stays queued for the next start.
        Spool changes already asked for are finished first.
        """
        Service.stopService(self)
        if self._requests.running:
            self._requests.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for session in list(self._sessions):
            session.abort()
        stopped = Deferred.fromCoroutine(self._drain())
        stopped.addCallback(lambda _: MultiService.stopService(self))
        stopped.addBoth(lambda result: (self.spool.unlock(), result)[1])
        return stopped

    async def _drain(self) -> None:
        while self._disk:
            await DeferredList(list(self._disk.values()))

    # Scheduling

    def _schedule(self, envelope: Envelope) -> None:
        timer = self._timers.pop(envelope.id, None)
        if timer is not None and timer.active():
            timer.cancel()
        pending = envelope.pending()
        if not pending or envelope.id in self._busy or not self.running:
            return
        delay = max(0.0, min(r.next_attempt for r in pending) - self._reactor.seconds())
        self._timers[envelope.id] = self._reactor.callLater(delay, self._attempt, envelope)

    def _attempt(self, envelope: Envelope) -> None:
        self._timers.pop(envelope.id, None)
        if self.envelopes.get(envelope.id) is not envelope:
            return
        self._busy.add(envelope.id)
        now = self._reactor.seconds()
        due = [r for r in envelope.pending() if r.next_attempt <= now]
        Deferred.fromCoroutine(self._send(envelope, due)).addErrback(
            lambda failure: log.failure("Queue attempt for {id} failed", failure,
                                        id=envelope.id)
        ).addBoth(lambda _: self._attempted(envelope))

    async def _send(self, envelope: Envelope, due: list[QueuedRecipient]) -> None:
        """
        Route each recipient, give the destinations their jobs, and wait for
        every job of this attempt.
        """
        jobs: dict[str, Job] = {}
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for recipient in due:
            by_domain.setdefault(recipient.address.rpartition("@")[2].lower(),
                                 []).append(recipient)
        for domain, recipients in by_domain.items():
            try:
                destination = await self._router.destination(domain)
            except RoutingError as e:
                self._record(envelope, recipients,
                             Outcome(e.text, e.status, permanent=e.permanent))
                continue
            job = jobs.get(destination.key)
            if job is None:
                job = jobs[destination.key] = Job(envelope, destination, [])
            job.recipients.extend(recipients)
        for key, job in jobs.items():
            self._waiting.setdefault(key, deque()).append(job)
        self._dispatch()
        unfinished = list(jobs.values())
        for job in list(unfinished):
            await job.done
            unfinished.remove(job)
            if unfinished and self.envelopes.get(envelope.id) is envelope:
                # Other destinations are still going: record this one's
                # deliveries now, so that a crash does not repeat them.
                self._on_disk(envelope.id, self.spool.save, envelope)

    def _attempted(self, envelope: Envelope) -> None:
        self._busy.discard(envelope.id)
        if self.envelopes.get(envelope.id) is not envelope:
            return
        if envelope.pending():
            self._on_disk(envelope.id, self.spool.save, envelope)
            self._schedule(envelope)
            return
        failed = [r for r in envelope.recipients if r.state == FAILED]
        if failed and envelope.sender:
            d = self._bounce(envelope, failed)
        else:
            if failed:
                log.info("No bounce for {id}: its sender is null", id=envelope.id)
            d = succeed(None)
        d.addCallbacks(lambda _: self._forget(envelope.id), self._bounce_failed,
                       errbackArgs=(envelope,))

    def _bounce_failed(self, failure, envelope: Envelope) -> None:
        log.failure("Could not bounce {id}; trying again later", failure, id=envelope.id)
        self._timers[envelope.id] = self._reactor.callLater(
            self._settings.retry_first, self._attempted, envelope)

    def _forget(self, queue_id: str) -> Deferred:
        self.envelopes.pop(queue_id, None)
        return self._on_disk(queue_id, self.spool.remove, queue_id)

    def _on_disk(self, queue_id: str, function, *args) -> Deferred:
        """
        Run a spool change in a thread, after the previous change to the
        same message (an older envelope must never overwrite a newer one).

        Once the runner is stopping, new changes are skipped: what is on
        disk is older, never wrong, and the next start retries from it.
        """
        if not self.running:
            return succeed(None)
        done = Deferred()

        def run(result=None):
            maybeDeferred(self._run, function, *args).addErrback(
                lambda failure: log.failure("Queue write for {id} failed", failure,
                                            id=queue_id)).chainDeferred(done)
            return result

        previous = self._disk.get(queue_id)
        if previous is None:
            run()
        else:
            previous.addBoth(run)
        self._disk[queue_id] = done
        done.addBoth(self._written, queue_id, done)
        return done

    def _written(self, result, queue_id: str, done: Deferred):
        if self._disk.get(queue_id) is done:
            del self._disk[queue_id]
        return result

    def _record(self, envelope: Envelope, recipients: list[QueuedRecipient],
                outcome: Outcome) -> None:
        """
        Apply an attempt's outcome: delivered, failed for good, given up
        after C{give_up_after}, or retried after a back-off that doubles
        from C{retry_first} up to C{retry_max}.
        """
        now = self._reactor.seconds()
        settings = self._settings
        for recipient in recipients:
            recipient.attempts += 1
            recipient.last_attempt = now
            recipient.reply, recipient.status = outcome.reply, outcome.status
            recipient.remote_mta, recipient.from_remote = outcome.remote_mta, outcome.from_remote
            fields = dict(id=envelope.id, recipient=recipient.address, reply=outcome.reply,
                          relay=outcome.remote_mta or "none")
            if outcome.delivered:
                recipient.state = DELIVERED
                log.info("Sent {id} to <{recipient}> via {relay}: {reply}", **fields)
            elif outcome.permanent:
                recipient.state = FAILED
                log.info("Failed {id} to <{recipient}> via {relay}: {reply}", **fields)
            elif now - envelope.arrival >= settings.give_up_after:
                recipient.state = FAILED
                log.info("Gave up {id} to <{recipient}> after {attempts} attempts: {reply}",
                         attempts=recipient.attempts, **fields)
            else:
                backoff = min(settings.retry_max,
                              settings.retry_first * 2 ** (recipient.attempts - 1))
                recipient.next_attempt = now + backoff
                log.info("Deferred {id} to <{recipient}> via {relay}: {reply}; next try in "
                         "{backoff:.0f} s", backoff=backoff, **fields)

    # Connections

    def _dispatch(self) -> None:
        """
        Open connections for waiting jobs, within the limits.
        """
        settings = self._settings
        for key, jobs in list(self._waiting.items()):
            while (jobs and self._total < settings.max_concurrent
                   and self._connections.get(key, 0) < settings.max_per_destination):
                self._connections[key] = self._connections.get(key, 0) + 1
                self._total += 1
                Deferred.fromCoroutine(self._work(key, jobs.popleft())).addErrback(
                    lambda failure: log.failure("Queue connection failed", failure))
            if not jobs:
                self._waiting.pop(key, None)

    def _next_job(self, key: str) -> Job | None:
        jobs = self._waiting.get(key)
        if not jobs:
            self._waiting.pop(key, None)
            return None
        return jobs.popleft()

    async def _work(self, key: str, job: Job) -> None:
        """
        One connection to a destination, carrying its waiting jobs one after
        another until none is left.
        """
        session = None
        try:
            while job is not None:
                if self.envelopes.get(job.envelope.id) is not job.envelope:
                    job.done.callback(None)
                    job = self._next_job(key)
                    continue
                if session is None:
                    try:
                        session = await self._connect(job.destination)
                    except ConnectionFailed as e:
                        # Everything waiting for this destination would meet
                        # the same fate now.
                        for failed in [job, *self._waiting.pop(key, ())]:
                            self._finish_job(failed, _connection_outcome(e))
                        return
                    self._sessions.add(session)
                try:
                    outcomes = await self._send_job(session, job)
                except Exception as e:
                    self._sessions.discard(session)
                    session.abort()
                    session = None
                    if not isinstance(e, ConnectionFailed):
                        log.failure("Sending {id} failed", id=job.envelope.id)
                        e = ConnectionFailed(f"local error: {e}")
                    self._finish_job(job, _connection_outcome(e))
                else:
                    for reply, recipients in outcomes:
                        self._record(job.envelope, recipients,
                                     Outcome.from_reply(reply, session.where))
                    job.done.callback(None)
                job = self._next_job(key)
            if session is not None:
                self._sessions.discard(session)
                await session.quit()
        finally:
            self._connections[key] -= 1
            if not self._connections[key]:
                del self._connections[key]
            self._total -= 1
            self._dispatch()

    def _finish_job(self, job: Job, outcome: Outcome) -> None:
        self._record(job.envelope, job.recipients, outcome)
        job.done.callback(None)

    async def _send_job(self, session, job: Job) -> list[tuple[SMTPReply, list]]:
        envelope = job.envelope
        reader = _MessageReader(self.spool.message_path(envelope.id), self._run)
        try:
            replies = await session.send(
                OutboundMessage(envelope.sender, envelope.size, envelope.eight_bit,
                                envelope.smtputf8),
                [r.address for r in job.recipients], reader.read)
        finally:
            reader.close()
        grouped: dict[SMTPReply, list] = {}
        for recipient in job.recipients:
            grouped.setdefault(replies[recipient.address], []).append(recipient)
        return list(grouped.items())

    async def _connect(self, destination: Destination):
        """
        A session with the first host that takes one (RFC 5321 5.1: MX
        hosts in order, each address of each).
        """
        problems = []
        for host in destination.hosts:
            try:
                addresses = await self._router.addresses(host)
            except RoutingError as e:
                problems.append(e.text)
                continue
            for address in addresses:
                try:
                    return await self._open(destination, host, address)
                except ConnectionFailed as e:
                    problems.append(str(e))
        raise ConnectionFailed("; ".join(problems[-3:]) or "no host to try")

    async def _open(self, destination: Destination, host: str, address: str):
        try:
            return await open_session(self._reactor, destination, host, address, self._client)
        except ConnectionFailed as e:
            if not (e.tls_failed and destination.tls == "opportunistic"):
                raise
            # Opportunistic TLS must not make mail undeliverable (RFC 7435).
            log.info("TLS with {host}[{address}] failed ({error}); trying without",
                     host=host, address=address, error=str(e))
            return await open_session(self._reactor, destination, host, address,
                                      self._client, starttls=False)

    # Operators' requests (mailsrv queue retry|delete)

    def _poll_requests(self) -> Deferred:
        return self._run(_take_requests, self.spool.requests).addCallback(self._apply_requests)

    def _apply_requests(self, requests: list[tuple[str, str]]) -> None:
        for action, queue_id in requests:
            targets = list(self.envelopes.values()) if queue_id == "all" else [
                e for e in [self.envelopes.get(queue_id)] if e is not None]
            for envelope in targets:
                if action == "retry":
                    for recipient in envelope.pending():
                        recipient.next_attempt = 0.0
                    self._schedule(envelope)
                elif action == "delete":
                    log.info("Deleted {id} from the queue at the operator's request",
                             id=envelope.id)
                    timer = self._timers.pop(envelope.id, None)
                    if timer is not None and timer.active():
                        timer.cancel()
                    self._forget(envelope.id)


def _connection_outcome(error: ConnectionFailed) -> Outcome:
    """
    No session, or a session lost mid-transaction: try again later.
    """
    status = "4.4.1" if error.reply is None else "4" + error.reply.status[1:]
    return Outcome(str(error), status)


def _take_requests(folder) -> list[tuple[str, str]]:
    """
    Read and remove the request files (C{retry-ID}, C{retry-all},
    C{delete-ID}) that C{mailsrv queue} leaves.
    """
    requests = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return requests
    for entry in entries:
        action, _, queue_id = entry.name.partition("-")
        if action in ("retry", "delete") and queue_id:
            requests.append((action, queue_id))
        os.unlink(entry.path)
    return requests
