"""
Tests for L{mailsrv.store.make_store}: the backend named in the config.
"""

from dataclasses import replace
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.config import ConfigError, load_settings
from mailsrv.store import make_store
from mailsrv.store.maildir import MaildirStore
from mailsrv.store.testing import run_now

built = []


def custom_store(settings, run):
    """
    A third-party backend, as an embedder would plug one in.
    """
    store = MaildirStore(settings.store.path / "custom", run)
    built.append(store)
    return store


def not_a_store(settings, run):
    return object()


class MakeStoreTests(SynchronousTestCase):
    def settings(self, backend):
        settings = load_settings(None, Path(self.mktemp()).absolute(), environ={})
        return replace(settings, store=replace(settings.store, backend=backend))

    def test_maildirByDefault(self):
        store = make_store(self.settings("maildir"), run_now)
        self.assertIsInstance(store, MaildirStore)

    def test_factoryPath(self):
        settings = self.settings("tests.test_store_factory:custom_store")
        store = make_store(settings, run_now)
        self.assertIs(store, built[-1])
        self.assertEqual(store.root, settings.store.path / "custom")

    def test_badFactory(self):
        for backend, problem in (("tests.nowhere:factory", "cannot load"),
                                 ("tests.test_store_factory:not_a_store",
                                  "did not return an IMailStore")):
            with self.assertRaises(ConfigError) as caught:
                make_store(self.settings(backend), run_now)
            self.assertIn(problem, str(caught.exception))
