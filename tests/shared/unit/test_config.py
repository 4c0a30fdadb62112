"""tollgate.shared.config's ServiceSettings and both services' Settings on it: every variable read under its
service's name, frozen, failing fast on a bad value; pure, no fixtures."""

from __future__ import annotations

import dataclasses

import pytest

from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.config import ConfigError

# Every variable docs/operations.md documents, with a value other than its default, and the field it sets.
COMMON = {
    "DATABASE_URL": ("database_url", "postgresql://db/x"),
    "HOST": ("host", "127.0.0.1"),
    "PORT": ("port", 7000),
    "METRICS_PORT": ("metrics_port", 7001),
    "HTTP_PORT": ("http_port", 7002),
    "WORKERS": ("workers", 3),
    "DB_POOL_SIZE": ("db_pool_size", 4),
    "GRACE_SECONDS": ("grace_seconds", 1.5),
    "DRAIN_SECONDS": ("drain_seconds", 2.5),
    "HEALTH_INTERVAL_SECONDS": ("health_interval_seconds", 0.5),
    "AUTH_CACHE_SECONDS": ("auth_cache_seconds", 7.0),
    "LOG_LEVEL": ("log_level", "WARNING"),
    "TLS_CERT_FILE": ("tls_cert_file", "/tls/tls.crt"),
    "TLS_KEY_FILE": ("tls_key_file", "/tls/tls.key"),
    "TLS_CLIENT_CA_FILE": ("tls_client_ca_file", "/tls/ca.crt"),
    "HEALTH_PORT": ("health_port", 7003),
}
OWN = {
    UsageSettings: {
        "USAGE_BACKFILL_DAYS": ("backfill_days", 9),
        "USAGE_FUTURE_SKEW_SECONDS": ("future_skew_seconds", 9),
        "USAGE_EXTERNAL_SOURCE_PREFIXES": ("external_prefixes", ("a:", "b:")),
        "USAGE_ROLLUP_INTERVAL_SECONDS": ("rollup_interval_seconds", 9.0),
        "USAGE_RETENTION_DAYS": ("retention_days", 9),
        "USAGE_MAX_DIMENSION_COMBINATIONS": ("max_dimension_combinations", 9),
        "USAGE_METER_MEMORY_MB": ("meter_memory_mb", 16),
    },
    PolicySettings: {
        "POLICY_USAGE_ADDR": ("usage_addr", "usage:1"),
        "POLICY_USAGE_TOKEN": ("usage_token", "tg_a_b"),
        "POLICY_USAGE_TIMEOUT_SECONDS": ("usage_timeout_seconds", 0.5),
        "POLICY_CACHE_POLL_SECONDS": ("cache_poll_seconds", 0.5),
        "POLICY_USAGE_COOLDOWN_SECONDS": ("usage_cooldown_seconds", 0.5),
        "POLICY_QUOTA_CACHE_SECONDS": ("quota_cache_seconds", 0.5),
        "POLICY_BALANCE_USAGE_SECONDS": ("balance_usage_seconds", 0.5),
        "POLICY_RANKING_CACHE_SECONDS": ("ranking_cache_seconds", 0.5),
        "POLICY_USAGE_TLS_CA_FILE": ("usage_tls_ca_file", "/tls/ca.crt"),
        "POLICY_USAGE_TLS_CERT_FILE": ("usage_tls_cert_file", "/tls/tls.crt"),
        "POLICY_USAGE_TLS_KEY_FILE": ("usage_tls_key_file", "/tls/tls.key"),
        "POLICY_USAGE_TLS_SERVER_NAME": ("usage_tls_server_name", "usage.tollgate.svc"),
        "POLICY_OUTBOX_INTERVAL_SECONDS": ("outbox_interval_seconds", 2.5),
        "POLICY_NOTIFICATION_RETENTION_DAYS": ("notification_retention_days", 30.0),
        "POLICY_MAX_WATCHES": ("max_watches", 2),
        "POLICY_DB_POOLING": ("db_pooling", "TRANSACTION"),
    },
}
SERVICES = [(UsageSettings, "USAGE"), (PolicySettings, "POLICY")]


def _raw(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("settings_class, prefix", SERVICES)
def test_every_documented_variable_sets_its_field_under_the_services_own_name(settings_class, prefix):
    wanted = {f"{prefix}_{name}": spec for name, spec in COMMON.items()} | OWN[settings_class]
    settings = settings_class.from_env({name: _raw(value) for name, (_, value) in wanted.items()})
    assert {field: getattr(settings, field) for field, _ in wanted.values()} == dict(wanted.values())
    assert {f.name for f in dataclasses.fields(settings_class)} == {field for field, _ in wanted.values()}


@pytest.mark.parametrize("settings_class, prefix", SERVICES)
def test_the_variables_read_are_exactly_the_documented_ones(settings_class, prefix):
    documented = {f"{prefix}_{name}" for name in COMMON} | set(OWN[settings_class])
    assert settings_class.variables() == documented | ({"POLICY_USAGE_TOKEN_FILE"} if prefix == "POLICY" else set())


@pytest.mark.parametrize("settings_class, prefix", SERVICES)
def test_an_empty_environment_gives_the_defaults_and_each_service_its_own_ports_and_database(settings_class, prefix):
    assert settings_class.from_env({}) == settings_class()
    assert settings_class.from_env({f"{prefix}_METRICS_PORT": "-1"}).metrics_port is None
    assert settings_class.from_env({f"{prefix}_HTTP_PORT": "-1"}).http_port is None
    assert settings_class.from_env({f"{prefix}_HTTP_PORT": "0"}).http_port == 0
    other = PolicySettings() if settings_class is UsageSettings else UsageSettings()
    mine = settings_class()
    assert mine.port != other.port and mine.metrics_port != other.metrics_port and mine.http_port != other.http_port
    assert mine.database_url != other.database_url


@pytest.mark.parametrize("settings_class, prefix", SERVICES)
@pytest.mark.parametrize(
    "name, raw",
    [
        ("PORT", "70000"),
        ("WORKERS", "many"),
        ("GRACE_SECONDS", "-1"),
        ("DATABASE_URL", "mysql://db"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_fails_fast_naming_the_variable(settings_class, prefix, name, raw):
    with pytest.raises(ConfigError, match=f"^{prefix}_{name} must"):
        settings_class.from_env({f"{prefix}_{name}": raw})


def test_policy_keeps_a_worker_thread_from_watches_and_says_so_when_told_otherwise():
    assert (PolicySettings().watch_limit, PolicySettings(workers=5).watch_limit) == (8, 2)
    assert PolicySettings.from_env({"POLICY_WORKERS": "4", "POLICY_MAX_WATCHES": "3"}).watch_limit == 3
    with pytest.raises(ConfigError, match="^POLICY_MAX_WATCHES \\(4\\) must be below POLICY_WORKERS \\(4\\)"):
        PolicySettings.from_env({"POLICY_WORKERS": "4", "POLICY_MAX_WATCHES": "4"})


@pytest.mark.parametrize("settings_class", [UsageSettings, PolicySettings])
def test_settings_are_frozen(settings_class):
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_class().port = 1
