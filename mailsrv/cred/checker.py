"""
The passwd-file credential checker.

Hashes are verified in a thread pool, never on the reactor.  The file is
re-read (in the pool too) whenever it changed since the last login, so
C{mailsrv user add} takes effect without a restart.  Unknown users cost a
dummy verification, so timing does not tell which users exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredLock, succeed
from zope.interface import implementer

from mailsrv.cred.passwd_file import BadAddress, PasswdEntry, canonical_user, read_passwd
from mailsrv.cred.passwords import dummy_verify, verify_password
from mailsrv.cred.throttle import LoginThrottle, peer_key
from mailsrv.logs import get_logger

log = get_logger(__name__)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


@implementer(ICredentialsChecker)
class PasswdFileChecker:
    """
    Check L{IUsernamePassword} credentials against a Dovecot-style passwd-file.

    The avatar ID is the canonical address (L{str}).  Credentials with a
    C{peer} attribute (L{mailsrv.cred.credentials.PeerUsernamePassword}) are
    throttled per client address as well as per account.

    @param run: C{run(function, *args) -> Deferred}: runs hashing and file
        reads off the reactor thread (a thread pool).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: Path, *, default_domain: str, throttle: LoginThrottle,
                 run: Callable[..., Deferred]):
        self.path = path
        self._default_domain = default_domain
        self._throttle = throttle
        self._in_pool = run
        self._users: dict[str, PasswdEntry] = {}
        self._signature = None
        self._reload_lock = DeferredLock()

    def _file_signature(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def users(self) -> Deferred:
        """
        The users as the file has them now, re-read if it changed.

        @return: a L{Deferred} firing with C{{address: PasswdEntry}}.
        """
        if self._file_signature() == self._signature:
            return succeed(self._users)  # every RCPT asks: keep it cheap
        return Deferred.fromCoroutine(self._current_users())

    async def _current_users(self) -> dict[str, PasswdEntry]:
        async with self._reload_lock:
            signature = self._file_signature()
            if signature != self._signature:
                parsed = await self._in_pool(read_passwd, self.path)
                for problem in parsed.problems:
                    log.warn("{problem}", problem=problem)
                self._users, self._signature = parsed.users, signature
                log.info("Loaded {count} users from {path}", count=len(parsed.users),
                         path=str(self.path))
        return self._users

    def requestAvatarId(self, credentials) -> Deferred:
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials) -> str:
        try:
            user = canonical_user(_text(credentials.username), self._default_domain)
            password = _text(credentials.password)
        except (BadAddress, UnicodeDecodeError):
            raise UnauthorizedLogin("bad credentials") from None
        account_key = "user:" + user
        keys = [account_key]
        peer = getattr(credentials, "peer", None)
        if peer:
            keys.append("peer:" + peer_key(peer))

        if self._throttle.blocked_for(keys) > 0:
            log.info("Login for {user} from {peer} refused: throttled", user=user, peer=peer)
            raise UnauthorizedLogin("bad credentials")

        entry = (await self.users()).get(user)
        if entry is None:
            await self._in_pool(dummy_verify)
            matched = False
        else:
            matched = await self._in_pool(verify_password, password, entry.password)
        if not matched:
            self._throttle.failed(keys)
            log.info("Login for {user} from {peer} failed", user=user, peer=peer)
            raise UnauthorizedLogin("bad credentials")
        self._throttle.succeeded(account_key)
        return user
