"""
Build the whole server from settings: the one way to run mailsrv, whether
under C{twistd mailsrv} or inside another Twisted application.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.cred.portal import Portal
from twisted.internet.endpoints import serverFromString
from twisted.mail.interfaces import IMessageDelivery
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from mailsrv import __version__
from mailsrv.config import IMPLICIT_TLS_ROLES, ROLES, ConfigError, Settings
from mailsrv.connections import ConnectionLimiter
from mailsrv.cred.checker import PasswdFileChecker
from mailsrv.cred.realm import MailRealm
from mailsrv.cred.throttle import LoginThrottle
from mailsrv.imap.server import IMAPFactory, RecentClaims
from mailsrv.logs import get_logger, set_level
from mailsrv.pop3.server import POP3Factory
from mailsrv.queue.bounces import Bouncer
from mailsrv.queue.client import ClientSettings
from mailsrv.queue.dkim import DKIMSigner
from mailsrv.queue.routing import Router
from mailsrv.queue.runner import QueueRunner
from mailsrv.queue.spool import Spool
from mailsrv.smtp.delivery import (
    RecipientPolicy,
    SessionDelivery,
    StoreDelivery,
    deliver_locally,
)
from mailsrv.smtp.server import ROLES as SMTP_ROLES
from mailsrv.smtp.server import SMTPFactory
from mailsrv.store import make_store
from mailsrv.store.interfaces import IMailStore
from mailsrv.threads import ThreadPoolService
from mailsrv.tls import ServerTLS, ensure_self_signed, self_signed_paths

log = get_logger(__name__)

#: Which protocol each listener role speaks.
PROTOCOL_OF_ROLE = {
    "smtp": "smtp", "submission": "smtp", "submissions": "smtp",
    "imap": "imap", "imaps": "imap",
    "pop3": "pop3", "pop3s": "pop3",
}


class ListenError(ConfigError):
    """
    A listener could not be opened (port in use, no permission...).
    """


def prepare_data_dir(settings: Settings, owner: tuple[int, int] | None = None) -> None:
    """
    Create the data folder (private to its owner) and, when no certificate
    is configured, the self-signed one.

    @param owner: C{(uid, gid)} to give what is created here, for a server
        that starts as root and drops to that user (C{twistd --uid/--gid}).
    """
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = [data_dir]
        if settings.tls.certificate is None:
            cert, key = ensure_self_signed(data_dir, settings.server.hostname)
            created += [cert.parent, cert, key]
        if owner is not None:
            for path in created:
                os.chown(path, *owner)
    except OSError as e:
        raise ConfigError(f"{e.filename}: cannot prepare the data folder: {e.strerror}") from None


def server_tls(settings: Settings) -> ServerTLS:
    """
    The server's TLS context, from the configured or self-signed files.
    """
    cert, key = settings.tls.certificate, settings.tls.key
    if cert is None:
        cert, key = self_signed_paths(settings.data_dir)
    return ServerTLS(cert, key, settings.tls.min_version)


class ListenerService(Service):
    """
    One listening port.  It binds in C{privilegedStartService}, so that
    ports below 1024 open before twistd drops root.
    """

    def __init__(self, role: str, description: str, endpoint, factory):
        self.role = role
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port = None

    def privilegedStartService(self):
        super().privilegedStartService()
        outcome = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ListenError(f"listeners.{self.role}: {self.description}: did not start")
        if isinstance(outcome[0], Failure):
            error = outcome[0].value
            reason = getattr(error, "socketError", None) or error
            raise ListenError(f"listeners.{self.role}: cannot listen on {self.description}: "
                              f"{getattr(reason, 'strerror', None) or reason}")
        self.port = outcome[0]
        address = self.port.getHost()
        where = f"{address.host}:{address.port}" if hasattr(address, "port") else str(address)
        log.info("{role} listening on {address} ({description})", role=self.role,
                 address=where, description=self.description)

    def startService(self):
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class MailService(MultiService):
    """
    The running server: its listeners, the TLS context, the cred portal.

    @ivar settings: the L{Settings} it was built from.
    @ivar tls: the L{ServerTLS} shared by all listeners.
    @ivar portal: the L{Portal} every protocol logs in through.
    @ivar checker: the L{PasswdFileChecker} behind the portal.
    @ivar store: the L{IMailStore} holding everyone's mail.
    """

    def __init__(self, settings: Settings, tls: ServerTLS, portal: Portal,
                 checker: PasswdFileChecker, store: IMailStore):
        super().__init__()
        self.settings = settings
        self.tls = tls
        self.portal = portal
        self.checker = checker
        self.store = store

    def listeners(self) -> list[ListenerService]:
        return [s for s in self if isinstance(s, ListenerService)]

    def privilegedStartService(self):
        source = self.settings.source or "built-in configuration"
        log.info("mailsrv {version} starting: config {source}, data in {data}",
                 version=__version__, source=str(source), data=str(self.settings.data_dir))
        super().privilegedStartService()

    def startService(self):
        super().startService()
        self.checker.users().addCallback(self._hint_when_no_users)

    def stopService(self):
        self.store.stop_timers()  # their work would find the pools gone
        stopped = super().stopService()
        stopped.addBoth(lambda result: (self.store.close(), result)[1])
        return stopped

    def _hint_when_no_users(self, users):
        if not users:
            domain = self.settings.default_domain
            log.info("No users yet. Add one with: mailsrv --data {data} user add you@{domain}",
                     data=str(self.settings.data_dir), domain=domain)

    def reload(self) -> None:
        """
        Re-read what can change without a restart (SIGHUP).
        """
        self.tls.reload()


class ReloadOnHangup(Service):
    """
    Call C{target.reload()} on SIGHUP, the way operators expect daemons to.
    """

    def __init__(self, target: MailService, reactor):
        self._target = target
        self._reactor = reactor
        self._previous = None

    def startService(self):
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum, frame):
        self._reactor.callFromThread(self._target.reload)

    def stopService(self):
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)


def make_service(settings: Settings, *, reactor=None,
                 owner: tuple[int, int] | None = None,
                 make_delivery: Callable[[object], IMessageDelivery] | None = None
                 ) -> MailService:
    """
    Build the server described by C{settings}.

    Creates the data folder and certificate if needed; the listeners open
    when the service starts.

    @param make_delivery: C{make_delivery(session)} returns the
        L{IMessageDelivery} for one SMTP transaction, for an application
        that takes accepted mail itself; by default it goes to the store.

    @raise ConfigError: if something the settings name cannot be used.
    """
    if reactor is None:
        from twisted.internet import reactor
    set_level(settings.logging.level)
    prepare_data_dir(settings, owner)
    tls = server_tls(settings)

    hashing = ThreadPoolService("mailsrv-hashing", max(2, os.cpu_count() or 1), reactor)
    disk = ThreadPoolService("mailsrv-store", settings.store.threads, reactor)
    commits = ThreadPoolService("mailsrv-store-commit", 4, reactor)
    store = make_store(settings, disk.run, reactor, commits.run)
    checker = PasswdFileChecker(
        Path(settings.auth.passwd_file),
        default_domain=settings.default_domain,
        throttle=LoginThrottle(settings.auth.throttle, reactor),
        run=hashing.run,
    )
    portal = Portal(MailRealm(store), [checker])
    service = MailService(settings, tls, portal, checker, store)
    hashing.setServiceParent(service)
    disk.setServiceParent(service)
    commits.setServiceParent(service)
    if settings.tls.check_interval > 0:
        TimerService(settings.tls.check_interval, tls.reload_if_changed).setServiceParent(service)

    smtp_limiter = ConnectionLimiter(settings.limits.max_connections,
                                     settings.limits.max_connections_per_ip)
    policy = RecipientPolicy(settings, checker.users)
    queue = make_queue(settings, store, policy, reactor, owner)
    queue.setServiceParent(service)
    session_delivery = SessionDelivery(
        make_delivery or (lambda session: StoreDelivery(session, store, policy, queue)))
    imap_limiter = ConnectionLimiter(settings.limits.max_connections,
                                     settings.limits.max_connections_per_ip)
    recent, imap_sessions = RecentClaims(), Counter()
    pop3_limiter = ConnectionLimiter(settings.limits.max_connections,
                                     settings.limits.max_connections_per_ip)
    maildrops: set[str] = set()
    for role in ROLES:
        protocol = PROTOCOL_OF_ROLE[role]
        for description in settings.endpoints(role):
            if protocol == "smtp":
                factory = SMTPFactory(SMTP_ROLES[role], settings, tls, portal, session_delivery,
                                      smtp_limiter)
            elif protocol == "imap":
                factory = IMAPFactory(settings, tls, portal, imap_limiter, disk.run,
                                      implicit_tls=role in IMPLICIT_TLS_ROLES, recent=recent,
                                      sessions=imap_sessions)
            else:
                factory = POP3Factory(settings, tls, portal, pop3_limiter, disk.run,
                                      implicit_tls=role in IMPLICIT_TLS_ROLES,
                                      maildrops=maildrops)
            if role in IMPLICIT_TLS_ROLES and not description.startswith("ssl:"):
                factory = TLSMemoryBIOFactory(tls, False, factory)
            factory.noisy = False
            endpoint = serverFromString(reactor, description)
            ListenerService(role, description, endpoint, factory).setServiceParent(service)
    return service


def make_queue(settings: Settings, store: IMailStore, policy: RecipientPolicy, reactor,
               owner: tuple[int, int] | None = None) -> QueueRunner:
    """
    The outbound queue, with its own disk threads, routing through
    C{twisted.names} and bounces into the store or back into the queue.

    @raise ConfigError: if another server holds the queue, or a DKIM key
        cannot be used.
    """
    queue_settings = settings.queue
    spool = Spool(queue_settings.path)
    try:
        spool.lock_or_fail()
        if owner is not None:
            for path in (spool.path, spool.requests, spool.path / "lock"):
                os.chown(path, *owner)
    except OSError as e:
        raise ConfigError(f"{e.filename}: cannot prepare the queue: {e.strerror}") from None
    signer = DKIMSigner(settings.domains)
    disk = ThreadPoolService("mailsrv-queue", 4, reactor)
    client = ClientSettings(settings.server.hostname, queue_settings.connect_timeout,
                            queue_settings.command_timeout, queue_settings.data_timeout,
                            queue_settings.ca_file)
    router = Router(queue_settings)
    bouncer = Bouncer(settings.server.hostname, spool, disk.run,
                      deliver_local=partial(deliver_locally, store, policy),
                      is_local=lambda address: policy.is_local(address.rpartition("@")[2]),
                      enqueue=lambda *args, **kwargs: runner.enqueue(*args, **kwargs))
    runner = QueueRunner(spool, router, queue_settings, client, disk.run, reactor,
                         bounce=bouncer.bounce, sign=signer.signature)
    disk.setServiceParent(runner)
    return runner
