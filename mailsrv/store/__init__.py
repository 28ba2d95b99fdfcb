"""
The mail store: L{IMailStore} and its backends.

C{[store] backend} names the backend: C{"maildir"}, or a
C{"package.module:factory"} path to a callable C{factory(settings, run)}
returning an L{IMailStore}, where C{run(function, *args)} runs blocking
work in the store's thread pool and returns a L{Deferred}.
"""

from __future__ import annotations

from twisted.python.reflect import namedAny

from mailsrv.config import ConfigError, Settings
from mailsrv.store.interfaces import IMailStore


def make_store(settings: Settings, run, reactor=None, run_commit=None) -> IMailStore:
    """
    Build the configured store.

    @raise ConfigError: if a named backend cannot be loaded or is not a store.
    """
    backend = settings.store.backend
    if backend == "maildir":
        from mailsrv.store.maildir import MaildirStore

        return MaildirStore(settings.store.path, run, quotas=settings.store.quota_for,
                            reactor=reactor, run_commit=run_commit)
    try:
        factory = namedAny(backend.replace(":", "."))
        store = factory(settings, run)
    except Exception as e:
        raise ConfigError(f"store.backend: cannot load {backend}: {e}") from None
    if not IMailStore.providedBy(store):
        raise ConfigError(f"store.backend: {backend} did not return an IMailStore")
    return store
