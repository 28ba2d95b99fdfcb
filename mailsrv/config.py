"""
Settings: one TOML file, or none, loaded into frozen, validated dataclasses.

Every key has a default (the embedded configuration that C{twistd -n mailsrv}
runs on without a file); a file overrides keys one by one.  Any mistake stops
start-up with a single line that names the file, the key and what was
expected, raised as L{ConfigError}.

Relative paths: C{server.data_dir} is relative to the folder of the config
file (or to the working directory without one); every other path is relative
to the data folder.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from twisted.internet.endpoints import serverFromString

#: Listener roles, in the order they are started and logged.
ROLES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")

#: Roles whose listeners speak TLS from the first byte (RFC 8314).
IMPLICIT_TLS_ROLES = frozenset({"submissions", "imaps", "pop3s"})

#: Environment variable naming the config file when C{--config} is not given.
CONFIG_ENV = "MAILSRV_CONFIG"

#: Environment variable naming the data folder when C{--data} is not given.
DATA_ENV = "MAILSRV_DATA"


class ConfigError(Exception):
    """
    A configuration mistake; C{str()} is the one line to show the operator.
    """


def _positive(value):
    return None if value > 0 else "expected a number greater than 0"


def _not_negative(value):
    return None if value >= 0 else "expected a number of 0 or more"


def _one_of(*choices):
    def check(value):
        if value in choices:
            return None
        return "expected one of " + ", ".join(repr(c) for c in choices)

    return check


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _hostname(value):
    return None if _HOSTNAME.match(value) else "expected a DNS host name like 'mail.example.org'"


def _address(value):
    if value == "" or re.fullmatch(r"[^@\s]+@[^@\s]+", value):
        return None
    return "expected an address like 'user@example.org'"


_ENDPOINT_PORT_TYPES = ("tcp", "tcp6", "ssl")


def _endpoint(description):
    """
    Check a strports listener description the way Twisted will parse it.
    """
    kind, _, rest = description.partition(":")
    if kind == "systemd":
        # Parsing needs the inherited descriptors, which exist only under systemd.
        return None if rest else "expected 'systemd:domain=INET:index=0'"
    try:
        serverFromString(None, description)
    except Exception as e:
        return f"expected a listener like 'tcp:2525:interface=127.0.0.1' ({e})"
    if kind in _ENDPOINT_PORT_TYPES:
        args = [a for a in re.split(r"(?<!\\):", rest)]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        positional = [a for a in args if "=" not in a]
        port = named.get("port", positional[0] if positional else "")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            return f"port must be a number from 0 to 65535, got {port!r}"
    return None


def _setting(default, check=None, *, path=False):
    """
    A dataclass field with a default, an optional check and a path flag.
    """
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default),
                     metadata={"check": check, "path": path})
    return field(default=default, metadata={"check": check, "path": path})


def _section(cls):
    return field(default_factory=cls)


def _listen(port):
    return _setting((f"tcp:{port}:interface=127.0.0.1",), _endpoint)


@dataclass(frozen=True)
class ServerSettings:
    hostname: str = _setting("localhost", _hostname)
    data_dir: Path = _setting(Path("mailsrv-data"))


@dataclass(frozen=True)
class ListenerSettings:
    smtp: tuple[str, ...] = _listen(2525)
    submission: tuple[str, ...] = _listen(2587)
    submissions: tuple[str, ...] = _listen(2465)
    imap: tuple[str, ...] = _listen(2143)
    imaps: tuple[str, ...] = _listen(2993)
    pop3: tuple[str, ...] = _listen(2110)
    pop3s: tuple[str, ...] = _listen(2995)


@dataclass(frozen=True)
class DomainSettings:
    aliases: dict[str, tuple[str, ...]] = _setting({})
    catch_all: str = _setting("", _address)
    dkim_key: Path | None = _setting(None, path=True)
    dkim_selector: str = _setting("mailsrv")


@dataclass(frozen=True)
class StoreSettings:
    backend: str = _setting("maildir")
    path: Path = _setting(Path("mail"), path=True)
    threads: int = _setting(16, _positive)
    quota: int = _setting(0, _not_negative)
    user_quotas: dict[str, int] = _setting({})

    def quota_for(self, address: str) -> int | None:
        """
        The bytes C{address} may store, or L{None} for no limit.
        """
        limit = self.user_quotas.get(address, self.quota)
        return limit or None


@dataclass(frozen=True)
class ThrottleSettings:
    free_failures: int = _setting(5, _not_negative)
    base_delay: float = _setting(1.0, _positive)
    max_delay: float = _setting(300.0, _positive)
    forget_after: float = _setting(3600.0, _positive)


@dataclass(frozen=True)
class AuthSettings:
    passwd_file: Path = _setting(Path("users"), path=True)
    default_domain: str = _setting("")
    allow_plaintext: bool = _setting(False)
    restrict_senders: bool = _setting(True)
    hash_scheme: str = _setting("argon2", _one_of("argon2", "bcrypt"))
    throttle: ThrottleSettings = _section(ThrottleSettings)


@dataclass(frozen=True)
class TLSSettings:
    certificate: Path | None = _setting(None, path=True)
    key: Path | None = _setting(None, path=True)
    min_version: str = _setting("1.2", _one_of("1.2", "1.3"))
    check_interval: float = _setting(60.0, _not_negative)


@dataclass(frozen=True)
class LimitSettings:
    max_message_size: int = _setting(25 * 1024 * 1024, _positive)
    max_recipients: int = _setting(100, _positive)
    max_line_length: int = _setting(1000, _positive)
    max_literal_size: int = _setting(64 * 1024, _positive)
    max_command_length: int = _setting(64 * 1024, _positive)
    max_connections: int = _setting(1000, _positive)
    max_connections_per_ip: int = _setting(20, _positive)
    max_connections_per_user: int = _setting(20, _positive)
    command_timeout: float = _setting(300.0, _positive)
    data_timeout: float = _setting(600.0, _positive)
    idle_timeout: float = _setting(1800.0, _positive)
    max_errors: int = _setting(20, _positive)
    max_auth_failures: int = _setting(3, _positive)


#: Transport security policies for outbound connections.
TLS_POLICIES = ("none", "opportunistic", "required", "verify")


@dataclass(frozen=True)
class RouteSettings:
    """
    Where mail for one recipient domain goes instead of its MX hosts.
    """

    host: str = _setting("")
    port: int = _setting(25, _positive)
    implicit_tls: bool = _setting(False)
    tls: str = _setting("opportunistic", _one_of(*TLS_POLICIES))
    username: str = _setting("")
    password: str = _setting("")


@dataclass(frozen=True)
class SmarthostSettings(RouteSettings):
    """
    The relay that all outbound mail goes through, when set.
    """

    port: int = _setting(587, _positive)
    tls: str = _setting("verify", _one_of(*TLS_POLICIES))


@dataclass(frozen=True)
class QueueSettings:
    path: Path = _setting(Path("queue"), path=True)
    retry_first: float = _setting(300.0, _positive)
    retry_max: float = _setting(4000.0, _positive)
    give_up_after: float = _setting(5 * 24 * 3600.0, _positive)
    max_concurrent: int = _setting(20, _positive)
    max_per_destination: int = _setting(5, _positive)
    connect_timeout: float = _setting(30.0, _positive)
    command_timeout: float = _setting(300.0, _positive)
    data_timeout: float = _setting(600.0, _positive)
    tls: str = _setting("opportunistic", _one_of(*TLS_POLICIES))
    ca_file: Path | None = _setting(None, path=True)
    smarthost: SmarthostSettings = _section(SmarthostSettings)
    routes: dict[str, RouteSettings] = _setting({})


@dataclass(frozen=True)
class LoggingSettings:
    level: str = _setting("info", _one_of("debug", "info", "warn", "error"))


def _default_domains():
    return {"localhost": DomainSettings()}


@dataclass(frozen=True)
class Settings:
    """
    The whole configuration; C{source} is the file it came from, or L{None}.
    """

    server: ServerSettings = _section(ServerSettings)
    listeners: ListenerSettings = _section(ListenerSettings)
    domains: dict[str, DomainSettings] = field(default_factory=_default_domains)
    store: StoreSettings = _section(StoreSettings)
    auth: AuthSettings = _section(AuthSettings)
    tls: TLSSettings = _section(TLSSettings)
    limits: LimitSettings = _section(LimitSettings)
    queue: QueueSettings = _section(QueueSettings)
    logging: LoggingSettings = _section(LoggingSettings)
    source: Path | None = field(default=None, compare=False)

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def default_domain(self) -> str:
        """
        The domain appended to a login name given without one.
        """
        return self.auth.default_domain or next(iter(self.domains))

    def endpoints(self, role: str) -> tuple[str, ...]:
        return getattr(self.listeners, role)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number",
               bool: "true or false", Path: "a path (string)"}


class _Loader:
    """
    Turn a TOML table into one of the dataclasses above, naming the key of
    every mistake.
    """

    def __init__(self, source: str, data_dir: Path | None):
        self.source = source
        self.data_dir = data_dir

    def fail(self, key, problem):
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def build(self, cls, table, prefix=""):
        if not isinstance(table, dict):
            self.fail(prefix.rstrip("."), "expected a table")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls) if f.compare}
        for key in table:
            if key not in known:
                self.fail(prefix + key, "unknown key (expected one of "
                          + ", ".join(sorted(known)) + ")")
        values = {}
        for name, f in known.items():
            key = prefix + name
            if name in table:
                value = self.convert(hints[name], table[name], key)
                check = f.metadata.get("check")
                for item in value if isinstance(value, tuple) else (value,):
                    problem = check(item) if check and item is not None else None
                    if problem:
                        self.fail(key, problem)
            elif is_dataclass(hints[name]):
                value = self.build(hints[name], {}, key + ".")
            else:
                value = getattr(cls(), name)
            if f.metadata.get("path") and value is not None and self.data_dir is not None:
                value = self.data_dir / value
            values[name] = value
        return cls(**values)

    def convert(self, hint, value, key):
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if is_dataclass(hint):
            return self.build(hint, value, key + ".")
        if origin in (typing.Union, types.UnionType):
            # Only "X | None" is used: an empty string means None.
            if value == "":
                return None
            return self.convert(args[0], value, key)
        if origin is tuple:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                self.fail(key, "expected a string or a list of strings")
            return tuple(self.convert(args[0], item, key) for item in items)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(key, "expected a table")
            return {k: self.convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is Path and isinstance(value, str):
            return Path(os.path.expanduser(value))
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            self.fail(key, f"expected {_TYPE_NAMES[hint]}, got {value!r}")
        return value


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def locate_config(config_path=None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """
    The config file to use: C{--config}, else C{$MAILSRV_CONFIG}, else none.
    """
    chosen = config_path or environ.get(CONFIG_ENV) or None
    return Path(chosen).expanduser().absolute() if chosen else None


def load_settings(config_path=None, data_dir=None, *,
                  environ: Mapping[str, str] = os.environ) -> Settings:
    """
    Load and validate the configuration exactly as C{twistd mailsrv} and the
    C{mailsrv} command both do.

    @param config_path: C{--config}, or L{None} for C{$MAILSRV_CONFIG} or the
        embedded defaults.
    @param data_dir: C{--data}, overriding C{server.data_dir}.
    @raise ConfigError: for any mistake, with a one-line message.
    """
    path = locate_config(config_path, environ)
    table = _read_toml(path) if path else {}
    source = str(path) if path else "built-in configuration"
    base = path.parent if path else Path.cwd()

    server = _Loader(source, None).build(ServerSettings, table.get("server", {}), "server.")
    chosen_data = data_dir or environ.get(DATA_ENV) or None
    data = Path(chosen_data).expanduser().absolute() if chosen_data else base / server.data_dir
    server = replace(server, data_dir=Path(os.path.normpath(data)))

    loader = _Loader(source, server.data_dir)
    rest = {k: v for k, v in table.items() if k not in ("server", "domains")}
    settings = loader.build(Settings, rest)
    domains = _load_domains(loader, table.get("domains"))
    settings = replace(settings, server=server, domains=domains, source=path)
    _check_together(loader, settings)
    return settings


def _load_domains(loader, table):
    if table is None:
        return _default_domains()
    if not isinstance(table, dict) or not table:
        loader.fail("domains", "expected at least one [domains.\"example.org\"] table")
    domains = {}
    for name, domain_table in table.items():
        problem = _hostname(name)
        if problem:
            loader.fail(f"domains.{name}", problem)
        domains[name.lower()] = loader.build(DomainSettings, domain_table, f"domains.{name}.")
    return domains


def _check_together(loader, settings: Settings):
    """
    Checks that involve more than one key, or the files that keys name.
    """
    tls = settings.tls
    if (tls.certificate is None) != (tls.key is None):
        loader.fail("tls", "set both 'certificate' and 'key', or neither (self-signed)")
    for name in ("certificate", "key"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            loader.fail(f"tls.{name}", f"file not found: {path}")
    default = settings.auth.default_domain
    if default and default.lower() not in settings.domains:
        loader.fail("auth.default_domain", f"{default!r} is not one of the [domains]")
    throttle = settings.auth.throttle
    if throttle.max_delay < throttle.base_delay:
        loader.fail("auth.throttle.max_delay", "must not be less than base_delay")
    for address, limit in settings.store.user_quotas.items():
        problem = _address(address) or _not_negative(limit)
        if problem:
            loader.fail(f"store.user_quotas.{address}", problem)
    _check_queue(loader, settings.queue)
    backend = settings.store.backend
    if backend != "maildir" and not re.fullmatch(r"[\w.]+:[\w.]+", backend):
        loader.fail("store.backend", "expected 'maildir' or 'package.module:factory'")


def _check_queue(loader, queue: QueueSettings):
    if queue.retry_max < queue.retry_first:
        loader.fail("queue.retry_max", "must not be less than retry_first")
    if queue.ca_file is not None and not queue.ca_file.is_file():
        loader.fail("queue.ca_file", f"file not found: {queue.ca_file}")
    if queue.smarthost.host:
        problem = _host(queue.smarthost.host)
        if problem:
            loader.fail("queue.smarthost.host", problem)
    for domain, route in queue.routes.items():
        problem = _hostname(domain) or _host(route.host)
        if problem:
            loader.fail(f"queue.routes.{domain}", problem)
    for key, route in [("queue.smarthost", queue.smarthost)] + [
            (f"queue.routes.{d}", r) for d, r in queue.routes.items()]:
        if route.password and not route.username:
            loader.fail(f"{key}.password", "set username too, or neither")


def _host(value):
    """
    A host to connect to: a DNS name or an IP address.
    """
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        return _hostname(value) if value else "expected a host name or an IP address"
