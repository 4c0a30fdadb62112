"""TLS settings: the file variables must make a configuration, checked when settings are read (the files
themselves are read at start, tests/shared/test_tls.py); pure, no fixtures."""

from __future__ import annotations

import pytest

from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.config import ConfigError


@pytest.mark.parametrize(
    "env, message",
    [
        ({"USAGE_TLS_CERT_FILE": "/tls/tls.crt"}, "USAGE_TLS_CERT_FILE and USAGE_TLS_KEY_FILE must be set together"),
        ({"USAGE_TLS_KEY_FILE": "/tls/tls.key"}, "USAGE_TLS_CERT_FILE and USAGE_TLS_KEY_FILE must be set together"),
        ({"USAGE_TLS_CLIENT_CA_FILE": "/tls/ca.crt"}, "USAGE_TLS_CLIENT_CA_FILE needs USAGE_TLS_CERT_FILE"),
    ],
)
def test_a_server_certificate_needs_its_key_and_mutual_tls_needs_both(env, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        UsageSettings.from_env(env)


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"POLICY_USAGE_TLS_CA_FILE": "/ca", "POLICY_USAGE_TLS_CERT_FILE": "/crt"},
            "POLICY_USAGE_TLS_CERT_FILE and POLICY_USAGE_TLS_KEY_FILE must be set together",
        ),
        (
            {"POLICY_USAGE_TLS_CERT_FILE": "/crt", "POLICY_USAGE_TLS_KEY_FILE": "/key"},
            "POLICY_USAGE_TLS_CERT_FILE, _KEY_FILE and _SERVER_NAME need POLICY_USAGE_TLS_CA_FILE",
        ),
    ],
)
def test_policys_client_certificate_needs_its_key_and_the_ca_to_trust(env, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        PolicySettings.from_env(env)


def test_without_tls_variables_both_servers_and_policys_client_speak_plaintext():
    usage, policy = UsageSettings.from_env({}), PolicySettings.from_env({})
    assert not usage.tls.enabled and not policy.tls.enabled and not policy.usage_tls.enabled
    assert usage.health_port is None and policy.health_port is None


def test_a_client_ca_makes_the_servers_tls_mutual():
    settings = PolicySettings.from_env(
        {"POLICY_TLS_CERT_FILE": "/c", "POLICY_TLS_KEY_FILE": "/k", "POLICY_TLS_CLIENT_CA_FILE": "/ca"}
    )
    assert settings.tls.enabled and settings.tls.client_ca_file == "/ca"
