"""Settings of the Policy service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ConfigError, env_database_url, env_float, env_int, env_secret, env_str


@dataclass(frozen=True)
class Settings:
    """Everything the Policy service can be told; see docs/operations.md for each variable."""

    database_url: str = "sqlite:///var/policy.db"
    host: str = "[::]"
    port: int = 50052
    metrics_port: int | None = 9465
    workers: int = 16
    db_pool_size: int = 8
    grace_seconds: float = 10.0
    drain_seconds: float = 0.0
    health_interval_seconds: float = 2.0
    auth_cache_seconds: float = 5.0
    log_level: str = "INFO"
    usage_addr: str = "localhost:50051"
    usage_token: str = ""
    usage_timeout_seconds: float = 0.25
    cache_poll_seconds: float = 1.0
    usage_cooldown_seconds: float = 2.0
    quota_cache_seconds: float = 2.0
    ranking_cache_seconds: float = 5.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        """Read POLICY_* variables; a bad value raises ConfigError naming the variable."""
        metrics_port = env_int(env, "POLICY_METRICS_PORT", 9465, low=-1, high=65535)
        settings = cls(
            database_url=env_database_url(env, "POLICY_DATABASE_URL", cls.database_url),
            host=env_str(env, "POLICY_HOST", cls.host),
            port=env_int(env, "POLICY_PORT", cls.port, low=0, high=65535),
            metrics_port=None if metrics_port < 0 else metrics_port,
            workers=env_int(env, "POLICY_WORKERS", cls.workers, low=1, high=256),
            db_pool_size=env_int(env, "POLICY_DB_POOL_SIZE", cls.db_pool_size, low=1, high=256),
            grace_seconds=env_float(env, "POLICY_GRACE_SECONDS", cls.grace_seconds, low=0, high=600),
            drain_seconds=env_float(env, "POLICY_DRAIN_SECONDS", cls.drain_seconds, low=0, high=600),
            health_interval_seconds=env_float(env, "POLICY_HEALTH_INTERVAL_SECONDS", cls.health_interval_seconds,
                                              low=0.05, high=300),
            auth_cache_seconds=env_float(env, "POLICY_AUTH_CACHE_SECONDS", cls.auth_cache_seconds, low=0, high=3600),
            log_level=env_str(env, "POLICY_LOG_LEVEL", cls.log_level).upper(),
            usage_addr=env_str(env, "POLICY_USAGE_ADDR", cls.usage_addr),
            usage_token=env_secret(env, "POLICY_USAGE_TOKEN"),
            usage_timeout_seconds=env_float(env, "POLICY_USAGE_TIMEOUT_SECONDS", cls.usage_timeout_seconds,
                                            low=0.01, high=60),
            usage_cooldown_seconds=env_float(env, "POLICY_USAGE_COOLDOWN_SECONDS", cls.usage_cooldown_seconds,
                                             low=0, high=600),
            quota_cache_seconds=env_float(env, "POLICY_QUOTA_CACHE_SECONDS", cls.quota_cache_seconds, low=0, high=3600),
            ranking_cache_seconds=env_float(env, "POLICY_RANKING_CACHE_SECONDS", cls.ranking_cache_seconds, low=0,
                                            high=3600),
            cache_poll_seconds=env_float(env, "POLICY_CACHE_POLL_SECONDS", cls.cache_poll_seconds, low=0.05, high=60),
        )
        if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"POLICY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {settings.log_level!r}")
        return settings
