"""Settings of the Usage service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ConfigError, env_database_url, env_float, env_int, env_str

DEFAULT_EXTERNAL_PREFIXES = ("adapter:", "webhook:")


@dataclass(frozen=True)
class Settings:
    """Everything the Usage service can be told; see docs/operations.md for each variable."""

    database_url: str = "sqlite:///var/usage.db"
    host: str = "[::]"
    port: int = 50051
    metrics_port: int | None = 9464
    workers: int = 16
    db_pool_size: int = 8
    grace_seconds: float = 10.0
    drain_seconds: float = 0.0
    health_interval_seconds: float = 2.0
    auth_cache_seconds: float = 5.0
    log_level: str = "INFO"
    backfill_days: int = 35
    future_skew_seconds: int = 300
    external_prefixes: tuple[str, ...] = DEFAULT_EXTERNAL_PREFIXES
    rollup_interval_seconds: float = 30.0
    retention_days: int = 400

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Read USAGE_* variables; a bad value raises ConfigError naming the variable."""
        metrics_port = env_int(env, "USAGE_METRICS_PORT", 9464, low=-1, high=65535)
        prefixes = tuple(p.strip() for p in env_str(env, "USAGE_EXTERNAL_SOURCE_PREFIXES",
                                                    ",".join(DEFAULT_EXTERNAL_PREFIXES)).split(",") if p.strip())
        settings = cls(
            database_url=env_database_url(env, "USAGE_DATABASE_URL", cls.database_url),
            host=env_str(env, "USAGE_HOST", cls.host),
            port=env_int(env, "USAGE_PORT", cls.port, low=0, high=65535),
            metrics_port=None if metrics_port < 0 else metrics_port,
            workers=env_int(env, "USAGE_WORKERS", cls.workers, low=1, high=256),
            db_pool_size=env_int(env, "USAGE_DB_POOL_SIZE", cls.db_pool_size, low=1, high=256),
            grace_seconds=env_float(env, "USAGE_GRACE_SECONDS", cls.grace_seconds, low=0, high=600),
            drain_seconds=env_float(env, "USAGE_DRAIN_SECONDS", cls.drain_seconds, low=0, high=600),
            health_interval_seconds=env_float(env, "USAGE_HEALTH_INTERVAL_SECONDS", cls.health_interval_seconds,
                                              low=0.05, high=300),
            auth_cache_seconds=env_float(env, "USAGE_AUTH_CACHE_SECONDS", cls.auth_cache_seconds, low=0, high=3600),
            log_level=env_str(env, "USAGE_LOG_LEVEL", cls.log_level).upper(),
            backfill_days=env_int(env, "USAGE_BACKFILL_DAYS", cls.backfill_days, low=1, high=3660),
            future_skew_seconds=env_int(env, "USAGE_FUTURE_SKEW_SECONDS", cls.future_skew_seconds, low=0, high=86400),
            external_prefixes=prefixes,
            rollup_interval_seconds=env_float(env, "USAGE_ROLLUP_INTERVAL_SECONDS", cls.rollup_interval_seconds,
                                              low=0, high=86400),
            retention_days=env_int(env, "USAGE_RETENTION_DAYS", cls.retention_days, low=0, high=36600),
        )
        if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"USAGE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {settings.log_level!r}")
        return settings
