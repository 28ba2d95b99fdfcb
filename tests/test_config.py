"""
Tests for L{mailsrv.config}: defaults, the sample file, and one clear error
per kind of mistake.
"""

import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mailsrv.config import (
    ROLES,
    ConfigError,
    DomainSettings,
    Settings,
    load_settings,
)

SAMPLE = Path(__file__).resolve().parent.parent / "etc" / "mailsrv.toml"


class ConfigFileMixin:
    def write(self, text: str) -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory.absolute() / "mailsrv.toml"
        path.write_text(text)
        return path

    def assertConfigError(self, text: str, *expected: str) -> str:
        """
        Loading C{text} fails with one line that contains each of C{expected}.
        """
        path = self.write(text)
        with self.assertRaises(ConfigError) as caught:
            load_settings(path, environ={})
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(str(path) + ": "), message)
        for part in expected:
            self.assertIn(part, message)
        return message


def schema_keys(cls, prefix=""):
    keys = set()
    for f in fields(cls):
        if not f.compare or f.name == "domains":
            continue
        sub = f.default_factory if is_dataclass(f.default_factory) else None
        if sub is not None:
            keys |= schema_keys(sub, f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def table_keys(table, prefix=""):
    keys = set()
    for name, value in table.items():
        if isinstance(value, dict) and name not in ("aliases", "user_quotas", "routes"):
            keys |= table_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


class DefaultsTests(ConfigFileMixin, SynchronousTestCase):
    def test_builtInDefaults(self):
        """
        Without a file: localhost only, the unprivileged ports, data in
        ./mailsrv-data, one local domain, no plaintext passwords.
        """
        settings = load_settings(None, environ={})
        self.assertIsNone(settings.source)
        self.assertEqual(settings.data_dir, Path.cwd() / "mailsrv-data")
        ports = {role: settings.endpoints(role) for role in ROLES}
        self.assertEqual(ports, {
            "smtp": ("tcp:2525:interface=127.0.0.1",),
            "submission": ("tcp:2587:interface=127.0.0.1",),
            "submissions": ("tcp:2465:interface=127.0.0.1",),
            "imap": ("tcp:2143:interface=127.0.0.1",),
            "imaps": ("tcp:2993:interface=127.0.0.1",),
            "pop3": ("tcp:2110:interface=127.0.0.1",),
            "pop3s": ("tcp:2995:interface=127.0.0.1",),
        })
        self.assertEqual(list(settings.domains), ["localhost"])
        self.assertFalse(settings.auth.allow_plaintext)
        self.assertEqual(settings.auth.passwd_file, settings.data_dir / "users")
        self.assertIsNone(settings.tls.certificate)

    def test_sampleIsTheDefault(self):
        """
        etc/mailsrv.toml documents exactly the built-in configuration.
        """
        data = Path(self.mktemp()).absolute()
        self.assertEqual(load_settings(SAMPLE, data, environ={}),
                         load_settings(None, data, environ={}))

    def test_sampleHasEveryKey(self):
        """
        Every setting appears in the sample file, so every default is written
        down (the brief's rule for limits).
        """
        with SAMPLE.open("rb") as f:
            sample = tomllib.load(f)
        documented = table_keys({k: v for k, v in sample.items() if k != "domains"})
        self.assertEqual(documented, schema_keys(Settings))
        self.assertEqual(set(sample["domains"]["localhost"]),
                         {f.name for f in fields(DomainSettings)})

    def test_fileOverridesKeyByKey(self):
        """
        Keys not in the file keep their defaults.
        """
        path = self.write('[limits]\nmax_recipients = 50\n[auth.throttle]\nbase_delay = 2\n')
        settings = load_settings(path, environ={})
        self.assertEqual(settings.limits.max_recipients, 50)
        self.assertEqual(settings.limits.max_line_length, 1000)
        self.assertEqual(settings.auth.throttle.base_delay, 2.0)
        self.assertEqual(settings.auth.throttle.free_failures, 5)
        self.assertEqual(settings.source, path)

    def test_pathsResolve(self):
        """
        data_dir is relative to the config file; other paths to data_dir;
        absolute paths stay.
        """
        path = self.write('[server]\ndata_dir = "state"\n'
                          '[auth]\npasswd_file = "/etc/mail/users"\n'
                          '[store]\npath = "boxes"\n')
        settings = load_settings(path, environ={})
        self.assertEqual(settings.data_dir, path.parent / "state")
        self.assertEqual(settings.auth.passwd_file, Path("/etc/mail/users"))
        self.assertEqual(settings.store.path, settings.data_dir / "boxes")

    def test_dataOverride(self):
        """
        --data wins over server.data_dir, and $MAILSRV_DATA over both when
        --data is absent.
        """
        path = self.write('[server]\ndata_dir = "state"\n')
        self.assertEqual(load_settings(path, "/srv/x", environ={}).data_dir, Path("/srv/x"))
        env = {"MAILSRV_DATA": "/srv/env"}
        self.assertEqual(load_settings(path, None, environ=env).data_dir, Path("/srv/env"))

    def test_configFromEnvironment(self):
        """
        $MAILSRV_CONFIG names the file when --config is not given.
        """
        path = self.write('[server]\nhostname = "mx.example.org"\n')
        settings = load_settings(None, environ={"MAILSRV_CONFIG": str(path)})
        self.assertEqual(settings.server.hostname, "mx.example.org")

    def test_listenerForms(self):
        """
        A listener is a string or a list of them; an empty list turns it off.
        """
        path = self.write('[listeners]\nsmtp = "tcp6:25"\n'
                          'imap = ["tcp:143:interface=127.0.0.1", "tcp6:143"]\npop3 = []\n'
                          'pop3s = "systemd:domain=INET:index=0"\n')
        settings = load_settings(path, environ={})
        self.assertEqual(settings.endpoints("smtp"), ("tcp6:25",))
        self.assertEqual(len(settings.endpoints("imap")), 2)
        self.assertEqual(settings.endpoints("pop3"), ())
        self.assertEqual(settings.endpoints("pop3s"), ("systemd:domain=INET:index=0",))

    def test_quotas(self):
        path = self.write('[store]\nquota = 1000\n'
                          'user_quotas = { "big@localhost" = 5000, "free@localhost" = 0 }\n')
        store = load_settings(path, environ={}).store
        self.assertEqual((store.quota_for("a@localhost"), store.quota_for("big@localhost"),
                          store.quota_for("free@localhost")), (1000, 5000, None))
        self.assertIsNone(load_settings(None, environ={}).store.quota_for("a@localhost"))

    def test_domainsReplaceTheDefault(self):
        path = self.write('[domains."Example.org"]\naliases = { info = ["a@example.org"] }\n'
                          '[domains."example.net"]\ncatch_all = "b@example.net"\n')
        settings = load_settings(path, environ={})
        self.assertEqual(list(settings.domains), ["example.org", "example.net"])
        self.assertEqual(settings.domains["example.org"].aliases, {"info": ("a@example.org",)})
        self.assertEqual(settings.domains["example.net"].catch_all, "b@example.net")
        self.assertEqual(settings.default_domain, "example.org")


class ErrorTests(ConfigFileMixin, SynchronousTestCase):
    def test_unknownKey(self):
        self.assertConfigError('[limits]\nmax_mesage_size = 10\n',
                               "limits.max_mesage_size", "unknown key", "max_message_size")

    def test_unknownSection(self):
        self.assertConfigError('[listener]\nsmtp = "tcp:25"\n', "listener", "unknown key")

    def test_wrongType(self):
        self.assertConfigError('[limits]\nmax_recipients = "many"\n',
                               "limits.max_recipients", "expected an integer", "'many'")

    def test_boolIsNotANumber(self):
        self.assertConfigError('[limits]\nmax_recipients = true\n', "expected an integer")

    def test_badPort(self):
        self.assertConfigError('[listeners]\nsmtp = "tcp:99999"\n',
                               "listeners.smtp", "port must be a number from 0 to 65535")

    def test_portNotANumber(self):
        self.assertConfigError('[listeners]\nimap = ["tcp:imap"]\n', "listeners.imap")

    def test_unknownEndpointType(self):
        self.assertConfigError('[listeners]\nsmtp = "carrier-pigeon:25"\n',
                               "listeners.smtp", "expected a listener like")

    def test_missingCertificate(self):
        self.assertConfigError('[tls]\ncertificate = "/nonexistent/cert.pem"\n'
                               'key = "/nonexistent/key.pem"\n',
                               "tls.certificate", "file not found", "/nonexistent/cert.pem")

    def test_certificateWithoutKey(self):
        self.assertConfigError(f'[tls]\ncertificate = "{SAMPLE}"\n', "tls", "set both")

    def test_badChoice(self):
        self.assertConfigError('[tls]\nmin_version = "1.0"\n',
                               "tls.min_version", "expected one of '1.2', '1.3'")

    def test_negativeLimit(self):
        self.assertConfigError('[limits]\nmax_message_size = -1\n',
                               "limits.max_message_size", "greater than 0")

    def test_badHostname(self):
        self.assertConfigError('[server]\nhostname = "mail server"\n', "server.hostname")

    def test_noDomains(self):
        self.assertConfigError('domains = {}\n', "domains", "at least one")

    def test_defaultDomainMustBeLocal(self):
        self.assertConfigError('[auth]\ndefault_domain = "example.com"\n',
                               "auth.default_domain", "not one of the [domains]")

    def test_badUserQuota(self):
        self.assertConfigError('[store]\nuser_quotas = { "nobody" = 5 }\n',
                               "store.user_quotas.nobody", "expected an address")
        self.assertConfigError('[store]\nuser_quotas = { "a@b.c" = -5 }\n',
                               "store.user_quotas.a@b.c", "0 or more")

    def test_badBackend(self):
        self.assertConfigError('[store]\nbackend = "mysql"\n', "store.backend")

    def test_invalidToml(self):
        self.assertConfigError('[limits\n', "not valid TOML", "line 1")

    def test_missingFile(self):
        path = Path(self.mktemp()) / "absent.toml"
        with self.assertRaises(ConfigError) as caught:
            load_settings(path, environ={})
        self.assertEqual(str(caught.exception), f"{path.absolute()}: no such file")
