"""tracing.TraceSettings: traces off unless the standard OTEL_* variables turn them on; pure, no fixtures."""

from __future__ import annotations

import pytest

from tollgate.shared.config import ConfigError
from tollgate.shared.tracing import TraceSettings


def test_an_empty_environment_leaves_traces_off_under_the_services_own_name():
    settings = TraceSettings.from_env({}, service="usage")
    assert settings.exporter == ""
    assert (settings.service_name, settings.sampler) == ("tollgate-usage", "parentbased_always_on")


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_an_otlp_endpoint_or_exporter_turns_otlp_export_on(env):
    assert TraceSettings.from_env(env, service="policy").exporter == "otlp"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_none_or_a_disabled_sdk_keeps_traces_off_whatever_the_endpoint(env):
    assert TraceSettings.from_env(env, service="policy").exporter == ""


def test_the_service_name_and_sampler_follow_the_standard_variables():
    settings = TraceSettings.from_env(
        {
            "OTEL_SERVICE_NAME": "billing-usage",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        },
        service="usage",
    )
    assert (settings.service_name, settings.sampler, settings.sampler_arg) == (
        "billing-usage",
        "parentbased_traceidratio",
        0.25,
    )


@pytest.mark.parametrize(
    "name, raw",
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ],
)
def test_a_bad_value_fails_fast_naming_the_variable(name, raw):
    with pytest.raises(ConfigError, match=f"^{name} must"):
        TraceSettings.from_env({name: raw}, service="usage")
