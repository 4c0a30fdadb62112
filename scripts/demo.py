"""The demo catalog `make run` loads through the public API (idempotently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from tollgate.policy.v1 import policy_pb2 as p
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
TENANT = "demo"
USERS = {"alice": "OWNER", "bob": "MEMBER", "carol": "VIEWER"}

FEATURES = [
    ("lead_scoring", "Lead scoring", p.MODE_AUTONOMOUS, ["scoring.requests", "scoring.models.used"]),
    ("lead_routing", "Lead routing", p.MODE_AMBITIOUS, ["leads.routed", "leads.processed"]),
    ("voice_agent", "Voice agent", p.MODE_PROACTIVE, ["voice.minutes.authorized", "voice.calls.completed"]),
    ("sla_guard", "SLA guard", p.MODE_AUTONOMOUS, ["sla.timers.started", "sla.escalations.triggered"]),
    ("integrations_sync", "Integrations sync", p.MODE_SUGGEST, ["integrations.api.calls"]),
]

PLANS = [
    p.Plan(
        plan_id="FREE",
        display_name="Free",
        default_cap=p.MODE_OBSERVE,
        feature_caps=[
            p.FeatureCap(feature_id="lead_scoring", cap=p.MODE_SUGGEST),
            p.FeatureCap(feature_id="voice_agent", cap=p.MODE_OFF),
        ],
        quotas=[p.QuotaLimit(metric="scoring.requests", period=p.QUOTA_PERIOD_MONTH, limit=1_000, cap=p.MODE_OBSERVE)],
    ),
    p.Plan(
        plan_id="PRO",
        display_name="Pro",
        default_cap=p.MODE_PROACTIVE,
        feature_caps=[p.FeatureCap(feature_id="lead_scoring", cap=p.MODE_AMBITIOUS)],
        quotas=[p.QuotaLimit(metric="scoring.requests", period=p.QUOTA_PERIOD_MONTH, limit=10_000, cap=p.MODE_SUGGEST)],
    ),
    p.Plan(plan_id="ENTERPRISE", display_name="Enterprise", default_cap=p.MODE_AUTONOMOUS),
]

# (user, metric, quantity) per demo event; spread over the last days.
USAGE = [
    ("alice", "scoring.requests", 120),
    ("alice", "leads.routed", 40),
    ("bob", "scoring.requests", 30),
    ("bob", "voice.minutes.authorized", 12),
    ("alice", "sla.timers.started", 8),
    ("carol", "leads.processed", 5),
]


# Meters of AI work, one per aggregation (the README's and docs/api.md's QueryUsage examples).
_B = u.CLASSIFICATION_BILLABLE
_NB = u.CLASSIFICATION_NON_BILLABLE
METERS = [
    u.Metric(
        name="ai.tokens",
        classification=_B,
        unit="token",
        description="Tokens of language-model calls, by model and token type.",
        dimensions=["model", "token_type"],
    ),
    u.Metric(
        name="ai.calls",
        classification=_B,
        unit="call",
        description="Language-model calls, counted.",
        aggregation=u.AGGREGATION_COUNT,
        dimensions=["model"],
    ),
    u.Metric(
        name="ai.latency.fastest",
        classification=_NB,
        unit="millisecond",
        description="The fastest language-model answer.",
        aggregation=u.AGGREGATION_MIN,
        dimensions=["model"],
    ),
    u.Metric(
        name="ai.prompt.largest",
        classification=_NB,
        unit="token",
        description="The largest prompt sent to a language model.",
        aggregation=u.AGGREGATION_MAX,
        dimensions=["model"],
    ),
    u.Metric(
        name="ai.users",
        classification=_B,
        unit="user",
        description="Distinct users of language models.",
        aggregation=u.AGGREGATION_UNIQUE_COUNT,
        unique_of="actor_id",
        dimensions=["model"],
    ),
    u.Metric(
        name="seats.active",
        classification=_B,
        unit="seat",
        description="Seats in use, as last reported.",
        aggregation=u.AGGREGATION_LATEST,
    ),
]
# (user, model, token_type, tokens, latency in ms): the demo's language-model calls of each day.
AI_USAGE = [
    ("alice", "gpt-4o", "prompt", 1200, 900),
    ("alice", "gpt-4o", "completion", 350, 1400),
    ("bob", "claude-sonnet", "prompt", 800, 700),
    ("bob", "claude-sonnet", "cached", 2400, 450),
    ("carol", "claude-sonnet", "completion", 150, 1100),
]


def _ai_events(midnight: datetime, day: int) -> list[u.UsageEvent]:
    """One day's language-model calls, each reported to every AI meter, and the day's seat count."""
    events = []

    def add(name: str, index: int, at: datetime, **fields) -> None:
        occurred = Timestamp()
        occurred.FromDatetime(at)
        event_id = f"demo-{name}-{midnight:%Y%m%d}-{day}-{index}"
        events.append(u.UsageEvent(event_id=event_id, occurred_at=occurred, source_service="demo-loader", **fields))

    for index, (user, model, token_type, tokens, latency_ms) in enumerate(AI_USAGE):
        at = midnight - timedelta(days=day, hours=2 * index + 1)
        tokens += 10 * day
        by_model = {"model": model}
        add(
            "ai-tokens",
            index,
            at,
            metric="ai.tokens",
            quantity=tokens,
            actor_id=user,
            dimensions=by_model | {"token_type": token_type},
        )
        add("ai-calls", index, at, metric="ai.calls", quantity=1, actor_id=user, dimensions=by_model)
        add(
            "ai-latency",
            index,
            at,
            metric="ai.latency.fastest",
            quantity=latency_ms + day,
            actor_id=user,
            dimensions=by_model,
        )
        if token_type == "prompt":
            add("ai-prompt", index, at, metric="ai.prompt.largest", quantity=tokens, actor_id=user, dimensions=by_model)
        add("ai-users", index, at, metric="ai.users", quantity=1, actor_id=user, dimensions=by_model)
    add("seats", 0, midnight - timedelta(days=day, hours=12), metric="seats.active", quantity=3 + day % 3)
    return events


def _admin_calls(policy: policy_pb2_grpc.PolicyAdminServiceStub, metadata) -> None:
    roles = json_format.Parse((ROOT / "examples" / "roles.json").read_text(), p.ImportRolesRequest())
    policy.ImportRoles(roles, metadata=metadata, timeout=10)
    for feature_id, name, max_mode, metrics in FEATURES:
        policy.UpsertFeature(
            p.UpsertFeatureRequest(
                feature=p.Feature(feature_id=feature_id, display_name=name, max_mode=max_mode, metrics=metrics)
            ),
            metadata=metadata,
            timeout=10,
        )
    for plan in PLANS:
        policy.UpsertPlan(p.UpsertPlanRequest(plan=plan), metadata=metadata, timeout=10)
    policy.SetTenantPolicy(
        p.SetTenantPolicyRequest(
            tenant_policy=p.TenantPolicy(tenant_id=TENANT, max_mode=p.MODE_AMBITIOUS, default_role_id="VIEWER")
        ),
        metadata=metadata,
        timeout=10,
    )
    policy.SetSubscription(
        p.SetSubscriptionRequest(
            subscription=p.Subscription(
                tenant_id=TENANT,
                plan_id="PRO",
                status=p.SUBSCRIPTION_STATUS_ACTIVE,
                feature_flags={"integrations_sync": False},
            )
        ),
        metadata=metadata,
        timeout=10,
    )
    for user, role in USERS.items():
        policy.BindRole(p.BindRoleRequest(tenant_id=TENANT, user_id=user, role_id=role), metadata=metadata, timeout=10)


def _events() -> list[u.UsageEvent]:
    # Anchored to today's midnight so a re-run on the same day repeats the same events (DUPLICATE).
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for day in range(1, 8):
        for index, (user, metric, quantity) in enumerate(USAGE):
            occurred = Timestamp()
            occurred.FromDatetime(midnight - timedelta(days=day, hours=index))
            events.append(
                u.UsageEvent(
                    event_id=f"demo-{midnight:%Y%m%d}-{day}-{index}",
                    metric=metric,
                    quantity=quantity,
                    occurred_at=occurred,
                    actor_id=user,
                    source_service="demo-loader",
                    correlation_id=f"demo-{midnight:%Y%m%d}-{day}-{index}",
                    metadata={"demo": True},
                )
            )
        events += _ai_events(midnight, day)
    return events


def load(*, usage_addr: str, policy_addr: str, admin_token: str) -> None:
    """Load roles, features, plans, the demo tenant, the AI meters and some usage."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(policy_addr) as channel:
        _admin_calls(policy_pb2_grpc.PolicyAdminServiceStub(channel), metadata)
    with grpc.insecure_channel(usage_addr) as channel:
        admin = usage_pb2_grpc.UsageAdminServiceStub(channel)
        for meter in METERS:
            admin.UpsertMetric(u.UpsertMetricRequest(metric=meter), metadata=metadata, timeout=10)
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        stub.RecordEvents(u.RecordEventsRequest(tenant_id=TENANT, events=_events()), metadata=metadata, timeout=30)


# The ports the README's calls are written for (the services' defaults).
DEFAULT_PORTS = {"usage": 50051, "policy": 50052, "usage_http": 8081, "policy_http": 8082}


def ports_from(env: dict[str, str]) -> dict[str, int]:
    """The gRPC and HTTP ports `make run`'s services listen on: a taken port stops a service (naming its
    variable), so the configured ones are the ones in use."""
    return {key: int(env.get(f"{key.upper()}_PORT", default)) for key, default in DEFAULT_PORTS.items()}


def at_ports(call: str, ports: dict[str, int]) -> str:
    """A README call aimed at these ports instead of the defaults it is written for."""
    for key in ("usage", "policy"):
        call = call.replace(f"localhost:{DEFAULT_PORTS[key]} ", f"localhost:{ports[key]} ")
    for key in ("usage_http", "policy_http"):
        call = call.replace(f"localhost:{DEFAULT_PORTS[key]}/", f"localhost:{ports[key]}/")
    return call


def banner(ports: dict[str, int], metrics: dict[str, int]) -> str:
    """What `make run` prints once both services answer: the endpoints it listens on and the README's calls,
    aimed at them."""
    calls = "\n".join(at_ports(call, ports) for call in readme_calls())

    def scrape(service: str) -> str:
        return f"metrics http://localhost:{metrics[service]}/metrics" if metrics[service] > 0 else "metrics off"

    return (
        "\nTollgate is up.\n"
        f"  Usage   gRPC localhost:{ports['usage']}   HTTP/JSON http://localhost:{ports['usage_http']}   "
        f"{scrape('usage')}\n"
        f"  Policy  gRPC localhost:{ports['policy']}   HTTP/JSON http://localhost:{ports['policy_http']}   "
        f"{scrape('policy')}\n"
        "  Tokens  var/admin.token (platform admin), var/demo.token (tenant 'demo')\n\n"
        "Try (from the repo root, in another terminal, with .venv/bin on PATH for grpcurl; curl for HTTP/JSON):\n"
        f"{calls}\n\nCtrl-C stops both services.\n"
    )


def readme_calls() -> list[str]:
    """The grpcurl and curl calls of the README, in order (tested by tests/deploy/test_readme_calls.py)."""
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```sh\n")[1:]
    lines = [line for block in blocks for line in block.split("```")[0].splitlines()]
    return [line for line in lines if line.startswith(("grpcurl ", "curl "))]
