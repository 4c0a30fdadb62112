"""Settings of the Usage service, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tollgate.shared.config import ServiceSettings, env_float, env_int, env_str

DEFAULT_EXTERNAL_PREFIXES = ("adapter:", "webhook:")


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Everything the Usage service can be told; see docs/operations.md for each variable."""

    PREFIX = "USAGE"

    database_url: str = "sqlite:///var/usage.db"
    port: int = 50051
    metrics_port: int | None = 9464
    http_port: int | None = 8081
    backfill_days: int = 35
    future_skew_seconds: int = 300
    external_prefixes: tuple[str, ...] = DEFAULT_EXTERNAL_PREFIXES
    rollup_interval_seconds: float = 30.0
    retention_days: int = 400
    max_dimension_combinations: int = 10_000
    meter_memory_mb: int = 64

    @classmethod
    def _own_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        prefixes = env_str(env, "USAGE_EXTERNAL_SOURCE_PREFIXES", ",".join(DEFAULT_EXTERNAL_PREFIXES))
        return dict(
            backfill_days=env_int(env, "USAGE_BACKFILL_DAYS", cls.backfill_days, low=1, high=3660),
            future_skew_seconds=env_int(env, "USAGE_FUTURE_SKEW_SECONDS", cls.future_skew_seconds, low=0, high=86400),
            external_prefixes=tuple(p.strip() for p in prefixes.split(",") if p.strip()),
            rollup_interval_seconds=env_float(
                env, "USAGE_ROLLUP_INTERVAL_SECONDS", cls.rollup_interval_seconds, low=0, high=86400
            ),
            retention_days=env_int(env, "USAGE_RETENTION_DAYS", cls.retention_days, low=0, high=36600),
            max_dimension_combinations=env_int(
                env, "USAGE_MAX_DIMENSION_COMBINATIONS", cls.max_dimension_combinations, low=1, high=10_000_000
            ),
            meter_memory_mb=env_int(env, "USAGE_METER_MEMORY_MB", cls.meter_memory_mb, low=0, high=65536),
        )
