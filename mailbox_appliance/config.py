"""Load and validate the appliance's YAML configuration into frozen dataclasses.

Every section is a small frozen dataclass; a generic walker checks the YAML against the
dataclass fields, so adding a section is adding a class.  Every problem is collected with its
dotted key path (``listen.smtpp: unknown service``) and all are reported at once in one
:class:`ConfigError`, so an admin fixes the file in one go.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import yaml

from mailbox_appliance.config_delivery import (
    DeliveryConfig,
    DNSConfig,
    RoutingConfig,
    check_delivery,
    check_dns,
    check_routing,
)
from mailbox_appliance.config_transfer import TransferConfig, check_transfer
from mailbox_appliance.config_types import Size, parse_size

ENV_VAR = "MAILBOX_APPLIANCE_CONFIG"

#: Every service the appliance knows, in the order listeners start.
SERVICES: tuple[str, ...] = (
    "admin",
    "smtp",
    "submission",
    "submissions",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
    "http",
    "https",
)

#: Services that speak TLS from the first byte; the appliance wraps them itself.
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s", "https"})

DEFAULT_PORTS = {
    "smtp": 10025,
    "submission": 10587,
    "submissions": 10465,
    "imap": 10143,
    "imaps": 10993,
    "pop3": 10110,
    "pop3s": 10995,
    "http": 10080,
    "https": 10443,
    "admin": 10081,
}


#: The largest storage.inline_max: one streaming chunk of the blob writer.
MAX_INLINE = 256 * 1024


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem, each naming its key."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def _default_listen() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(
        {name: (f"tcp:{port}:interface=127.0.0.1",) for name, port in DEFAULT_PORTS.items()}
    )


@dataclass(frozen=True)
class TLSConfig:
    #: PEM certificate (chain) file; null = a self-signed one generated under data_dir/tls.
    cert: str | None = None
    #: PEM private key file; null together with ``cert``.
    key: str | None = None


@dataclass(frozen=True)
class StorageConfig:
    #: Directory of the hot blob tier; null = <data_dir>/blobs/hot.
    hot_path: str | None = None
    #: Seconds between garbage-collection sweeps of unreferenced blobs.
    gc_interval: int = 300
    #: Seconds a blob must stay unreferenced before it is deleted.
    gc_grace: int = 600
    #: Threads that read the database concurrently (writes have one thread of their own).
    reader_threads: int = 4
    #: Threads that write, fsync and read blob files.
    blob_threads: int = 4
    #: Content up to this size is kept in the database with its message (one fsync serves a
    #: whole batch of small messages); larger content goes to blob files.  0 = always files.
    inline_max: Size = Size(64 * 1024)


@dataclass(frozen=True)
class PasswordHashConfig:
    """argon2id parameters (RFC 9106); the defaults are its second recommended option."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


@dataclass(frozen=True)
class ThrottleConfig:
    """Failed logins (SMTP AUTH, IMAP, POP3), counted per client IP (IPv6: per /64) and per
    account: each failure's reply is held back longer, then both are locked out for a while."""

    #: Seconds the reply to the first failure is held back; it doubles with each failure.
    delay: float = 1.0
    #: The longest a failure's reply is held back, in seconds.
    max_delay: float = 30.0
    #: Failures (from one IP, or against one account) before a temporary lockout.
    lockout_after: int = 10
    #: Seconds a lockout lasts; failures are also forgotten after this long.
    lockout_time: float = 900.0


@dataclass(frozen=True)
class AuthConfig:
    password_hash: PasswordHashConfig = field(default_factory=PasswordHashConfig)
    #: Threads that verify password hashes (argon2 is deliberately slow).
    hash_threads: int = 2
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)


@dataclass(frozen=True)
class SMTPConfig:
    """Limits of the SMTP services (smtp, submission, submissions)."""

    #: Largest message the MX (``smtp``) accepts; advertised as SIZE (RFC 1870).
    max_message_size: Size = Size(64 * 1024**2)
    #: Largest message an authenticated user may submit (``submission``, ``submissions``).
    submission_max_message_size: Size = Size(2 * 1024**3)
    #: Recipients per message (RFC 5321 §4.5.3.1.8 asks for at least 100).
    max_recipients: int = 100
    #: Seconds to wait for the next command (RFC 5321 §4.5.3.2.7 suggests 5 minutes).
    command_timeout: int = 300
    #: Seconds to wait for more message content during DATA or BDAT.
    data_timeout: int = 180
    #: Errors (5xx replies, failed logins) in one session before it is closed with 421.
    max_errors: int = 20
    #: Simultaneous SMTP connections in total; more get 421 4.7.0 and are closed.
    max_connections: int = 1000
    #: Simultaneous SMTP connections from one client IP address.
    max_connections_per_ip: int = 50


@dataclass(frozen=True)
class IMAPConfig:
    """Limits of the IMAP services (imap, imaps)."""

    #: Largest message APPEND accepts; advertised as APPENDLIMIT (RFC 7889).
    append_limit: Size = Size(2 * 1024**3)
    #: Seconds an authenticated session may be idle (RFC 3501 §5.4: at least 30 minutes).
    idle_timeout: int = 1800
    #: Seconds a client has to log in after connecting.
    login_timeout: int = 60
    #: Longest command line, literals excluded; a longer one gets BAD and the session goes on.
    max_line: Size = Size(64 * 1024)
    #: Simultaneous IMAP connections in total; more get ``* BYE`` and are closed.
    max_connections: int = 2000
    #: Simultaneous IMAP connections from one client IP address.
    max_connections_per_ip: int = 100


@dataclass(frozen=True)
class POP3Config:
    """Limits of the POP3 services (pop3, pop3s)."""

    #: Seconds a session may be idle (RFC 1939 §3: at least 10 minutes).
    timeout: int = 600
    #: Simultaneous POP3 connections in total; more get ``-ERR [SYS/TEMP]`` and are closed.
    max_connections: int = 1000
    #: Simultaneous POP3 connections from one client IP address.
    max_connections_per_ip: int = 50


@dataclass(frozen=True)
class QuotaConfig:
    """Mailbox quotas, and how they grow by themselves as mail arrives."""

    #: Quota of a new account when ``user add`` names none.
    default: Size = Size(1024**3)
    #: When a delivery takes an account's use past this fraction of its quota, the quota
    #: grows by ``grow_by`` (repeatedly, if one message needs it), up to ``max``.
    grow_at: float = 0.9
    #: How much the quota grows each time; 0 = quotas never grow by themselves.
    grow_by: Size = Size(1024**3)
    #: Automatic growth stops here (an admin can still set more with ``user quota``).
    max: Size = Size(10 * 1024**3)


@dataclass(frozen=True)
class Config:
    #: The name this box uses in greetings, Received headers and its certificate.
    hostname: str = field(default_factory=socket.getfqdn)
    #: Where the database (SQLite), blobs and generated certificates live.
    data_dir: str = "./var"
    #: SQLAlchemy URL; null = sqlite:///<data_dir>/appliance.sqlite3.
    database: str | None = None
    tls: TLSConfig = field(default_factory=TLSConfig)
    #: Service name -> Twisted server endpoint strings; [] turns a service off.
    listen: Mapping[str, tuple[str, ...]] = field(default_factory=_default_listen)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    #: The file this configuration came from (None = built-in defaults); not a YAML key.
    source: str | None = field(default=None, metadata={"internal": True})

    @property
    def database_url(self) -> str:
        if self.database:
            return self.database
        return "sqlite:///" + os.path.join(self.data_dir, "appliance.sqlite3")

    @property
    def hot_blob_path(self) -> str:
        return self.storage.hot_path or os.path.join(self.data_dir, "blobs", "hot")

    @property
    def srs_secret_path(self) -> str:
        return self.delivery.srs_secret_file or os.path.join(self.data_dir, "srs.key")

    @property
    def tls_cert_path(self) -> str:
        return self.tls.cert or os.path.join(self.data_dir, "tls", "cert.pem")

    @property
    def tls_key_path(self) -> str:
        return self.tls.key or os.path.join(self.data_dir, "tls", "key.pem")


# --- the generic walker -------------------------------------------------------------------

_UNION_TYPES = (typing.Union, types.UnionType)


def _type_name(tp: object) -> str:
    origin = typing.get_origin(tp)
    if tp is Size:
        return "a size (bytes, or a string like '64 MiB')"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin in _UNION_TYPES:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return str(tp)


def _show(value: object) -> str:
    """A value as YAML spells it, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _convert(value: object, tp: object, path: str, errors: list[str]) -> object:
    """Check ``value`` against type ``tp``; append errors; return the converted value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNION_TYPES:
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        if value is None:
            errors.append(f"{path}: expected {_type_name(inner)}, got null")
            return None
        return _convert(value, inner, path, errors)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if origin is tuple:  # tuple[X, ...]: a YAML list
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {_show(value)}")
            return ()
        return tuple(
            _convert(item, args[0], f"{path}[{i}]", errors) for i, item in enumerate(value)
        )
    if tp is Size:
        try:
            return Size(parse_size(value))
        except ValueError as e:
            errors.append(f"{path}: {e}")
            return None
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(f"{path}: expected a number, got {_show(value)}")
        elif value < 0:
            errors.append(f"{path}: expected zero or more, got {_show(value)}")
        return float(value) if isinstance(value, int | float) else value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {_show(value)}")
        elif value < 0:
            errors.append(f"{path}: expected zero or more, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str) or not value:
            errors.append(f"{path}: expected a non-empty string, got {_show(value)}")
        return value
    raise TypeError(f"config walker cannot handle {tp!r} at {path}")


def _build(cls: type, data: object, path: str, errors: list[str]) -> object:
    """Build dataclass ``cls`` from mapping ``data``; fields not given keep their defaults."""
    prefix = f"{path}." if path else ""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{path or 'config'}: expected a mapping, got {_show(data)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name in fields:
        if name not in data:
            continue
        if name == "listen" and cls is Config:
            kwargs[name] = _build_listen(data[name], f"{prefix}{name}", errors)
        else:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", errors)
    try:
        return cls(**kwargs)
    except TypeError:  # a wrong-typed value already reported; fall back to defaults
        return cls()


def _build_listen(data: object, path: str, errors: list[str]) -> Mapping[str, tuple[str, ...]]:
    listen = dict(_default_listen())
    if data is None:
        return MappingProxyType(listen)
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a mapping of service name to endpoint list")
        return MappingProxyType(listen)
    for service, endpoints in data.items():
        key = f"{path}.{service}"
        if service not in SERVICES:
            errors.append(f"{key}: unknown service (known: {', '.join(SERVICES)})")
            continue
        if endpoints is None:
            endpoints = []
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not isinstance(endpoints, list):
            errors.append(f"{key}: expected a list of endpoint strings")
            continue
        good = []
        for i, description in enumerate(endpoints):
            problem = endpoint_problem(description)
            if problem:
                errors.append(f"{key}[{i}]: {problem}")
            else:
                good.append(description)
        listen[service] = tuple(good)
    return MappingProxyType(listen)


def endpoint_problem(description: object) -> str | None:
    """Why ``description`` is not a usable Twisted server endpoint string, or None."""
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    if not isinstance(description, str) or not description:
        return f"expected a Twisted endpoint string such as 'tcp:25', got {description!r}"
    try:
        serverFromString(MemoryReactor(), description)
    except Exception as e:  # the parser raises ValueError, KeyError, TypeError...
        return f"bad endpoint string {description!r}: {e or type(e).__name__}"
    return None


def _check_tls(config: Config, errors: list[str]) -> None:
    if (config.tls.cert is None) != (config.tls.key is None):
        errors.append("tls: give both cert and key, or neither (null = self-signed)")
    elif config.tls.cert:
        from mailbox_appliance.tls import certificate_problem

        problem = certificate_problem(config.tls.cert, config.tls.key)
        if problem:
            errors.append(problem)


def _check_database(config: Config, errors: list[str]) -> None:
    if config.database is None:
        return
    from sqlalchemy.engine import make_url

    try:
        url = make_url(config.database)
    except Exception as e:
        errors.append(f"database: not an SQLAlchemy URL: {e}")
    else:
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            errors.append("database: only sqlite:// and postgresql+psycopg:// are supported")


def _check_storage(config: Config, errors: list[str]) -> None:
    for name in ("reader_threads", "blob_threads"):
        if getattr(config.storage, name) < 1:
            errors.append(f"storage.{name}: expected at least 1")
    if config.storage.inline_max > MAX_INLINE:
        errors.append(f"storage.inline_max: at most {MAX_INLINE // 1024} KiB")


def _check_auth(config: Config, errors: list[str]) -> None:
    if config.auth.hash_threads < 1:
        errors.append("auth.hash_threads: expected at least 1")
    if config.auth.throttle.lockout_after < 1:
        errors.append("auth.throttle.lockout_after: expected at least 1")
    if config.auth.throttle.lockout_time <= 0:
        errors.append("auth.throttle.lockout_time: expected more than 0 seconds")


def _check_smtp(config: Config, errors: list[str]) -> None:
    limits = ("max_recipients", "command_timeout", "data_timeout", "max_errors")
    for name in (*limits, "max_connections", "max_connections_per_ip"):
        if getattr(config.smtp, name) < 1:
            errors.append(f"smtp.{name}: expected at least 1")


def _check_imap(config: Config, errors: list[str]) -> None:
    for name in ("idle_timeout", "login_timeout", "max_connections", "max_connections_per_ip"):
        if getattr(config.imap, name) < 1:
            errors.append(f"imap.{name}: expected at least 1")
    if config.imap.idle_timeout < 1800:
        errors.append("imap.idle_timeout: RFC 3501 §5.4 asks for at least 1800 seconds")
    if config.imap.max_line < 1024:
        errors.append("imap.max_line: expected at least 1 KiB")


def _check_pop3(config: Config, errors: list[str]) -> None:
    for name in ("max_connections", "max_connections_per_ip"):
        if getattr(config.pop3, name) < 1:
            errors.append(f"pop3.{name}: expected at least 1")
    if config.pop3.timeout < 600:
        errors.append("pop3.timeout: RFC 1939 asks for at least 600 seconds")


def _check_quota(config: Config, errors: list[str]) -> None:
    if not 0 < config.quota.grow_at <= 1:
        errors.append(
            f"quota.grow_at: expected a fraction above 0 and at most 1, got {config.quota.grow_at}"
        )


def _check_data_dir(config: Config, errors: list[str]) -> None:
    if os.path.exists(config.data_dir) and not os.path.isdir(config.data_dir):
        errors.append(f"data_dir: {config.data_dir!r} exists and is not a directory")


#: Checks that look at values together or at the file system, each with the key it reads.
#: A check runs only when its key had no type error, so all problems are reported at once.
_SEMANTIC_CHECKS = (
    ("tls", _check_tls),
    ("database", _check_database),
    ("storage", _check_storage),
    ("auth", _check_auth),
    ("smtp", _check_smtp),
    ("imap", _check_imap),
    ("pop3", _check_pop3),
    ("quota", _check_quota),
    ("data_dir", _check_data_dir),
    ("delivery", lambda config, errors: check_delivery(config.delivery, errors)),
    ("dns", lambda config, errors: check_dns(config.dns, errors)),
    ("routing", lambda config, errors: check_routing(config.routing, errors)),
    ("transfer", lambda config, errors: check_transfer(config.transfer, errors)),
)


def _check_semantics(config: Config, errors: list[str]) -> None:
    broken = {error.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0] for error in errors}
    for key, check in _SEMANTIC_CHECKS:
        if key not in broken:
            check(config, errors)


def parse_config(data: object, source: str | None = None) -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    errors: list[str] = []
    config = _build(Config, data, "", errors)
    assert isinstance(config, Config)
    _check_semantics(config, errors)
    if errors:
        raise ConfigError(errors)
    storage, tls = config.storage, config.tls
    if storage.hot_path:
        storage = dataclasses.replace(storage, hot_path=os.path.abspath(storage.hot_path))
    if tls.cert and tls.key:
        tls = TLSConfig(cert=os.path.abspath(tls.cert), key=os.path.abspath(tls.key))
    return dataclasses.replace(
        config,
        data_dir=os.path.abspath(config.data_dir),
        storage=storage,
        tls=tls,
        source=source,
    )


def load_config(path: str | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration from ``path``, else ``$MAILBOX_APPLIANCE_CONFIG``, else defaults."""
    path = path or environ.get(ENV_VAR) or None
    if path is None:
        return parse_config({})
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror}"]) from e
    except yaml.YAMLError as e:
        # PyYAML's message spans several lines; each reported error must be one line.
        raise ConfigError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from e
    return parse_config(data if data is not None else {}, source=os.path.abspath(path))
