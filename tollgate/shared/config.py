"""Reading settings from the environment, failing fast with the variable's name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or the default when unset or empty."""
    value = env.get(name, "").strip()
    return value or default


def env_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """An integer within [low, high]."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    """A number within [low, high]."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, case-insensitively, given in upper case."""
    value = env_str(env, name, default).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
    return value


def env_database_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A SQLAlchemy URL for SQLite or PostgreSQL."""
    url = env_str(env, name, default)
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise ConfigError(f"{name} must be a sqlite:/// or postgresql:// URL, got {url!r}")
    return url


def env_secret(env: Mapping[str, str], name: str) -> str:
    """A secret given directly (NAME) or as a file path (NAME_FILE); empty when neither is set."""
    value = env.get(name, "").strip()
    path = env.get(f"{name}_FILE", "").strip()
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as error:
        raise ConfigError(f"{name}_FILE cannot be read: {error}") from None


def process_env() -> Mapping[str, str]:
    """The process environment (read once, in __main__)."""
    return dict(os.environ)


@dataclass(frozen=True)
class ServiceSettings:
    """What every Tollgate service can be told, read from `{PREFIX}_*` variables (docs/operations.md).

    A service subclasses it: sets PREFIX, redeclares the fields whose defaults differ (database, ports)
    and reads its own variables in `_own_from_env`.
    """

    PREFIX: ClassVar[str] = ""

    database_url: str = ""  # each service names its own default database
    host: str = "[::]"
    port: int = 0
    metrics_port: int | None = None
    http_port: int | None = None
    workers: int = 16
    db_pool_size: int = 8
    grace_seconds: float = 10.0
    drain_seconds: float = 0.0
    health_interval_seconds: float = 2.0
    auth_cache_seconds: float = 5.0
    log_level: str = "INFO"
    # TLS of the gRPC port (off while no certificate is named); a client CA makes it mutual TLS.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    health_port: int | None = None  # plaintext, health only: for probes that cannot speak TLS

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def tls(self):
        """The server's TLS settings, as one object (tollgate.shared.tls.ServerTls)."""
        from tollgate.shared.tls import ServerTls  # tls.py reads its errors from here

        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file, prefix=self.PREFIX)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Read the service's variables; a bad value raises ConfigError naming the variable."""
        return cls(**cls._common_from_env(env), **cls._own_from_env(env))

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every variable `from_env` reads (a secret's NAME_FILE too), for checking deployment manifests."""
        reading = _Recording()
        cls.from_env(reading)
        return frozenset(reading.names)

    @classmethod
    def _own_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """The service's own fields; none in the base."""
        return {}

    @classmethod
    def _common_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        p = cls.PREFIX
        # -1 turns the metrics endpoint off: an empty variable means the default, as everywhere.
        metrics_port = env_int(
            env, f"{p}_METRICS_PORT", -1 if cls.metrics_port is None else cls.metrics_port, low=-1, high=65535
        )
        # The same for the HTTP (Connect, gRPC-Web) port: -1 off, 0 any free port.
        http_port = env_int(env, f"{p}_HTTP_PORT", -1 if cls.http_port is None else cls.http_port, low=-1, high=65535)
        health_port = env_int(env, f"{p}_HEALTH_PORT", -1, low=-1, high=65535)
        tls = dict(
            tls_cert_file=env_str(env, f"{p}_TLS_CERT_FILE", ""),
            tls_key_file=env_str(env, f"{p}_TLS_KEY_FILE", ""),
            tls_client_ca_file=env_str(env, f"{p}_TLS_CLIENT_CA_FILE", ""),
        )
        from tollgate.shared.tls import ServerTls

        ServerTls(tls["tls_cert_file"], tls["tls_key_file"], tls["tls_client_ca_file"], prefix=p).check()
        return dict(
            **tls,
            health_port=None if health_port < 0 else health_port,
            database_url=env_database_url(env, f"{p}_DATABASE_URL", cls.database_url),
            host=env_str(env, f"{p}_HOST", cls.host),
            port=env_int(env, f"{p}_PORT", cls.port, low=0, high=65535),
            metrics_port=None if metrics_port < 0 else metrics_port,
            http_port=None if http_port < 0 else http_port,
            workers=env_int(env, f"{p}_WORKERS", cls.workers, low=1, high=256),
            db_pool_size=env_int(env, f"{p}_DB_POOL_SIZE", cls.db_pool_size, low=1, high=256),
            grace_seconds=env_float(env, f"{p}_GRACE_SECONDS", cls.grace_seconds, low=0, high=600),
            drain_seconds=env_float(env, f"{p}_DRAIN_SECONDS", cls.drain_seconds, low=0, high=600),
            health_interval_seconds=env_float(
                env, f"{p}_HEALTH_INTERVAL_SECONDS", cls.health_interval_seconds, low=0.05, high=300
            ),
            auth_cache_seconds=env_float(env, f"{p}_AUTH_CACHE_SECONDS", cls.auth_cache_seconds, low=0, high=3600),
            log_level=env_choice(env, f"{p}_LOG_LEVEL", cls.log_level, LOG_LEVELS),
        )


class _Recording(dict):
    """An empty environment that notes every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, name, default=None):
        self.names.add(name)
        return default
