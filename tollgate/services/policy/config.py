"""Settings of the Policy service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tollgate.shared.config import ConfigError, ServiceSettings, env_choice, env_float, env_int, env_secret, env_str
from tollgate.shared.tls import ClientTls


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything the Policy service can be told; see docs/operations.md for each variable."""

    PREFIX = "POLICY"

    database_url: str = "sqlite:///var/policy.db"
    port: int = 50052
    metrics_port: int | None = 9465
    http_port: int | None = 8082
    usage_addr: str = "localhost:50051"
    usage_token: str = ""
    usage_timeout_seconds: float = 0.25
    cache_poll_seconds: float = 1.0
    usage_cooldown_seconds: float = 2.0
    quota_cache_seconds: float = 2.0
    # How long Usage's answer that decides a balance (Reserve, CheckEntitlement) is reused; 0 asks on every call.
    balance_usage_seconds: float = 1.0
    ranking_cache_seconds: float = 5.0
    outbox_interval_seconds: float = 0.5
    # Threshold notifications are kept this long after the end of the period they are about.
    notification_retention_days: float = 90.0
    # Open WatchEntitlements streams, each holding a worker thread while it waits; 0: half of POLICY_WORKERS.
    max_watches: int = 0
    # DIRECT: Policy's connections are its own server sessions, on which it prepares Reserve's and Commit's
    # statements itself; TRANSACTION: they go through a transaction-pooling PgBouncer, which carries only the
    # driver's protocol-level prepared statements from one server connection to another.
    db_pooling: str = "DIRECT"
    # TLS towards Usage: the CA to trust (TLS on when set), a client certificate for mutual TLS.
    usage_tls_ca_file: str = ""
    usage_tls_cert_file: str = ""
    usage_tls_key_file: str = ""
    usage_tls_server_name: str = ""

    def __post_init__(self) -> None:
        if self.max_watches >= self.workers:
            raise ConfigError(
                f"POLICY_MAX_WATCHES ({self.max_watches}) must be below POLICY_WORKERS ({self.workers}): each open "
                "watch holds a worker thread, and the other calls need at least one"
            )

    @property
    def watch_limit(self) -> int:
        """The most WatchEntitlements streams open at once in this process."""
        return self.max_watches or self.workers // 2

    @property
    def usage_tls(self) -> ClientTls:
        return ClientTls(
            self.usage_tls_ca_file,
            self.usage_tls_cert_file,
            self.usage_tls_key_file,
            self.usage_tls_server_name,
            prefix="POLICY_USAGE",
        )

    @classmethod
    def _own_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        tls = dict(
            usage_tls_ca_file=env_str(env, "POLICY_USAGE_TLS_CA_FILE", ""),
            usage_tls_cert_file=env_str(env, "POLICY_USAGE_TLS_CERT_FILE", ""),
            usage_tls_key_file=env_str(env, "POLICY_USAGE_TLS_KEY_FILE", ""),
            usage_tls_server_name=env_str(env, "POLICY_USAGE_TLS_SERVER_NAME", ""),
        )
        ClientTls(
            tls["usage_tls_ca_file"],
            tls["usage_tls_cert_file"],
            tls["usage_tls_key_file"],
            tls["usage_tls_server_name"],
            prefix="POLICY_USAGE",
        ).check()
        return dict(
            **tls,
            usage_addr=env_str(env, "POLICY_USAGE_ADDR", cls.usage_addr),
            usage_token=env_secret(env, "POLICY_USAGE_TOKEN"),
            usage_timeout_seconds=env_float(
                env, "POLICY_USAGE_TIMEOUT_SECONDS", cls.usage_timeout_seconds, low=0.01, high=60
            ),
            usage_cooldown_seconds=env_float(
                env, "POLICY_USAGE_COOLDOWN_SECONDS", cls.usage_cooldown_seconds, low=0, high=600
            ),
            quota_cache_seconds=env_float(env, "POLICY_QUOTA_CACHE_SECONDS", cls.quota_cache_seconds, low=0, high=3600),
            balance_usage_seconds=env_float(
                env, "POLICY_BALANCE_USAGE_SECONDS", cls.balance_usage_seconds, low=0, high=60
            ),
            ranking_cache_seconds=env_float(
                env, "POLICY_RANKING_CACHE_SECONDS", cls.ranking_cache_seconds, low=0, high=3600
            ),
            cache_poll_seconds=env_float(env, "POLICY_CACHE_POLL_SECONDS", cls.cache_poll_seconds, low=0.05, high=60),
            outbox_interval_seconds=env_float(
                env, "POLICY_OUTBOX_INTERVAL_SECONDS", cls.outbox_interval_seconds, low=0.01, high=60
            ),
            notification_retention_days=env_float(
                env, "POLICY_NOTIFICATION_RETENTION_DAYS", cls.notification_retention_days, low=1, high=36_500
            ),
            max_watches=env_int(env, "POLICY_MAX_WATCHES", cls.max_watches, low=0, high=255),
            db_pooling=env_choice(env, "POLICY_DB_POOLING", cls.db_pooling, ("DIRECT", "TRANSACTION")),
        )
