"""Hostile input on every RPC of both services, enumerated from the service descriptors: messages
built by hypothesis from each request's descriptor (huge strings, NUL bytes, extreme and malformed
timestamps, unknown enum values, other tenants' and random page tokens, deep and oversized
metadata), named worst cases, and random bytes as the request body. Never INTERNAL, UNKNOWN or a
hang; a call answered with an error changes no stored row. Strings shaped like SQL are stored and
returned literally."""

from __future__ import annotations

import base64
import hashlib

import grpc
import pytest
import sqlalchemy
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests import support
from tests.policy_support import Client, build_world
from tests.usage_support import DAY_US, MINUTE_US, event, list_all, now_us, record, ts
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.policy.v1 import policy_pb2_grpc
from tollgate.services.policy import server as policy_server
from tollgate.services.policy import tables as policy_tables
from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage import server as usage_server
from tollgate.services.usage import tables as usage_tables
from tollgate.services.usage.config import Settings as UsageSettings
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u
from tollgate.usage.v1 import usage_pb2_grpc

ALL_SCOPES = ["usage:write", "usage:read", "usage:admin", "policy:read", "policy:write", "policy:admin"]
SERVICES = [u.DESCRIPTOR.services_by_name[name] for name in ("UsageService", "UsageAdminService")] + [
    pb.DESCRIPTOR.services_by_name[name] for name in ("PolicyService", "PolicyAdminService")
]
METHODS = [(service, method) for service in SERVICES for method in service.methods]
CODES = {code.value[0]: code for code in grpc.StatusCode}
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
SQL_SHAPED = ["'; DROP TABLE events; --", "%", "_", "\\", "'", '"', "a%b_c\\d", "1' OR '1'='1", "$1", "--", "/*x*/"]
HUGE = ["x" * 100_000, "é" * 50_000, "\x00" * 1_000, "a\x00b"]
INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**62, -(2**62), 2**63 - 1, -(2**63), 999, 1000, 1001, 10**18]
NANOS = [0, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]
TRIED = {"calls": 0}  # how many hostile calls this run made (printed with -s, reported in docs/reliability.md)


class Env:
    """Both services on fresh databases of one backend, tokens, a seeded world and real page tokens."""

    def __init__(self, dbs: support.Databases):
        self.dbs = dbs
        self.usage = usage_server.build(
            support.test_settings(UsageSettings(), database_url=dbs.usage_url, rollup_interval_seconds=0)
        )
        self.admin = support.make_token(dbs, tenant=None, scopes=ALL_SCOPES)
        usage_token = support.make_token(dbs, tenant=None, scopes=["usage:read"], service="usage")
        self.policy = policy_server.build(
            support.test_settings(
                PolicySettings(),
                database_url=dbs.policy_url,
                usage_addr=f"127.0.0.1:{self.usage.port}",
                usage_token=usage_token,
            )
        )
        self.tenant_a, self.tenant_b = support.new_tenant(), support.new_tenant()
        self.token_a = support.make_token(dbs, tenant=self.tenant_a, scopes=ALL_SCOPES)
        self.token_b = support.make_token(dbs, tenant=self.tenant_b, scopes=ALL_SCOPES)
        self.usage_channel, self.policy_channel = support.channel(self.usage.port), support.channel(self.policy.port)
        self.engines = [
            create_engine_for(dbs.usage_url, schema=usage_tables.SCHEMA, pool_size=1),
            create_engine_for(dbs.policy_url, schema=policy_tables.SCHEMA, pool_size=1),
        ]
        self._seed()

    def _seed(self) -> None:
        usage = usage_pb2_grpc.UsageServiceStub(self.usage_channel)
        admin = Client(policy_pb2_grpc.PolicyAdminServiceStub(self.policy_channel), self.admin)
        self.worlds = [build_world(admin, tenant) for tenant in (self.tenant_a, self.tenant_b)]
        for tenant, token in ((self.tenant_a, self.token_a), (self.tenant_b, self.token_b)):
            record(usage, token, tenant, [event(f"seed-{n}", correlation_id=f"c{n}") for n in range(3)])
        bearer_b = support.bearer(self.token_b)
        usage_admin = usage_pb2_grpc.UsageAdminServiceStub(self.usage_channel)
        for days in (400, 399):  # two audited horizon moves, far behind every seeded event
            usage_admin.PurgeEvents(
                u.PurgeEventsRequest(tenant_id=self.tenant_b, before_time=ts(now_us() - days * DAY_US)),
                metadata=bearer_b,
            )
        pages = [
            usage.ListEvents(u.ListEventsRequest(tenant_id=self.tenant_b, page_size=1), metadata=bearer_b),
            usage_admin.ListAuditRecords(
                u.ListAuditRecordsRequest(tenant_id=self.tenant_b, page_size=1), metadata=bearer_b
            ),
            admin.ListBindings(pb.ListBindingsRequest(tenant_id=self.tenant_b, page_size=1)),
            admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=self.tenant_b, page_size=1)),
            admin.ListRoles(pb.ListRolesRequest(page_size=1)),
            usage.ListMetrics(u.ListMetricsRequest(page_size=1), metadata=bearer_b),
        ]
        self.page_tokens = [page.next_page_token for page in pages if page.next_page_token]
        world = self.worlds[0]
        self.names = [
            self.tenant_a,
            self.tenant_b,
            world.feature,
            world.plan,
            *world.roles,
            "api.requests",
            "u1",
            "",
            "PERIOD_DAY",
            *self.page_tokens,
        ]

    def channel_for(self, service) -> grpc.Channel:
        return self.usage_channel if service.file is u.DESCRIPTOR else self.policy_channel

    def digest(self) -> str:
        """A digest of every stored row of both services (credentials aside: they are not input-driven); on
        PostgreSQL each table's rows are hashed by the server, all tables in one statement."""
        hashed = hashlib.sha256()
        for engine, metadata in zip(self.engines, (usage_tables.metadata, policy_tables.metadata)):
            tables = [table for table in metadata.sorted_tables if table.name != "credentials"]
            with engine.connect() as connection:
                if engine.dialect.name == "postgresql":
                    statement = sqlalchemy.text(
                        _digests_of(map(engine.dialect.identifier_preparer.format_table, tables))
                    )
                    hashed.update(repr(sorted(connection.execute(statement))).encode())
                    continue
                for table in tables:
                    rows = sorted(repr(tuple(row)) for row in connection.execute(select(table)))
                    hashed.update(f"{table.name}:{len(rows)}:{''.join(rows)}".encode())
        return hashed.hexdigest()

    def close(self) -> None:
        self.usage_channel.close()
        self.policy_channel.close()
        self.policy.stop(grace=1)
        self.usage.stop(grace=1)
        for engine in self.engines:
            engine.dispose()


def _digests_of(tables) -> str:
    """One statement: for each table, its name, row count and the md5 of its rows as text, in a fixed order."""
    return " UNION ALL ".join(
        f"SELECT '{table}', count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) FROM {table} r"
        for table in tables
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request, tmp_path_factory):
    if request.param == "sqlite":
        dbs = support.sqlite_databases(tmp_path_factory.mktemp("hostile"))
    else:
        admin_url = support.postgres_admin_url()
        if not admin_url:
            pytest.skip("no PostgreSQL: set TEST_DATABASE_URL or run through `make test`")
        dbs = support.postgres_databases(support.create_postgres_database(admin_url))
    running = Env(dbs)
    tried = TRIED["calls"]
    yield running
    print(f"\nhostile input on {request.param}: {TRIED['calls'] - tried} calls, none INTERNAL/UNKNOWN/hung")
    running.close()
    if request.param == "postgres":
        support.drop_postgres_database(support.postgres_admin_url(), dbs.usage_url)


# ---- strategies built from descriptors ----


def strings(env: Env):
    return st.one_of(
        st.sampled_from(env.names),
        st.sampled_from(SQL_SHAPED + HUGE),
        st.text(max_size=40),
        st.binary(min_size=1, max_size=48).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    )


def ints(low: int, high: int):
    return st.one_of(st.sampled_from([i for i in INTS if low <= i <= high]), st.integers(low, high))


JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def deep(levels: int) -> dict:
    nested: dict = {"leaf": "x"}
    for _ in range(levels):
        nested = {"n": nested}
    return nested


def structs():
    return st.one_of(
        st.dictionaries(st.text(max_size=20), JSON, max_size=6),
        st.sampled_from(
            [
                {"big": "y" * 5000},
                {"k" + str(i): i for i in range(400)},
                deep(10),
                deep(30),
                {"sql": SQL_SHAPED[0], "nul": "\x00"},
            ]
        ),
    )


_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def value_of(field, env: Env, depth: int):
    if field.type == F.TYPE_STRING:
        return strings(env)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=32 if field.type == F.TYPE_FLOAT else 64)
    if field.type == F.TYPE_ENUM:  # every named value, and numbers no name has
        return st.sampled_from([v.number for v in field.enum_type.values] + [999, -1, 2**31 - 1])
    if field.type in _RANGES:
        return ints(*_RANGES[field.type])
    return message_of(field.message_type, env, depth + 1)


def message_of(descriptor, env: Env, depth: int = 0):
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Struct":
        return structs().map(lambda d: _struct(cls, d))
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        seconds = ints(-(2**63), 2**63 - 1) | st.integers(-(2**40), 2**40) | st.just(now_us() // 1_000_000)
        return st.builds(cls, seconds=seconds, nanos=st.sampled_from(NANOS) | st.integers(-(2**31), 2**31 - 1))
    fields = [f for f in descriptor.fields if depth < 3 or f.type != F.TYPE_MESSAGE]

    @st.composite
    def build(draw):
        message = cls()
        for field in fields:
            if field.name != "tenant_id" and not draw(st.booleans()):
                continue
            _assign(message, field, draw, env, depth)
        return message

    return build()


def _struct(cls, data: dict):
    message = cls()
    message.update(data)
    return message


def _assign(message, field, draw, env: Env, depth: int) -> None:
    target = getattr(message, field.name) if field.is_repeated else None
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_field, value_field = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        for _ in range(draw(st.integers(0, 3))):
            key = draw(value_of(key_field, env, depth))
            value = draw(value_of(value_field, env, depth))
            if value_field.type == F.TYPE_MESSAGE:
                target[key].CopyFrom(value)
            else:
                target[key] = value
    elif target is not None:
        # Mostly a few items; sometimes an oversized list (1,001 of one drawn item).
        items = [draw(value_of(field, env, depth)) for _ in range(draw(st.integers(0, 3)))]
        small = field.type != F.TYPE_MESSAGE or items and items[0].ByteSize() < 2048
        if items and small and draw(st.integers(0, 9)) == 0:  # kept under ~2 MB a message
            items = items[:1] * 1001
        target.extend(items)
    elif field.type == F.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(draw(value_of(field, env, depth)))
    else:
        setattr(message, field.name, draw(value_of(field, env, depth)))


# ---- calling and judging ----


def path(service, method) -> str:
    return f"/{service.full_name}/{method.name}"


def call_raw(env: Env, service, method, bodies: list[bytes], token: str) -> grpc.StatusCode:
    """Send serialized bodies (valid or not) through a generic stub; the status the call ends with."""
    channel = env.channel_for(service)
    when = dict(metadata=support.bearer(token), timeout=30)
    TRIED["calls"] += 1
    try:
        if method.client_streaming:
            # A stream goes on past a refused batch: when every batch was refused, judge the call by the first refusal.
            answers = [
                u.StreamEventsResponse.FromString(body)
                for body in channel.stream_stream(path(service, method))(iter(bodies), **when)
            ]
            refusals = [answer.error.code for answer in answers if answer.HasField("error")]
            if refusals and len(refusals) == len(answers):
                return CODES[refusals[0]]
        elif method.server_streaming:
            # An accepted watch sends what is stored, then waits for more until its deadline: a short one, and
            # that deadline passing is the watch working, not the server hanging.
            try:
                for _ in channel.unary_stream(path(service, method))(bodies[0], metadata=when["metadata"], timeout=0.5):
                    pass
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
        else:
            channel.unary_unary(path(service, method))(bodies[0], **when)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def judge(env: Env, service, method, bodies: list[bytes], token: str) -> grpc.StatusCode:
    """Call, then check: no forbidden status, and an error left every stored row as it was."""
    before = env.digest()
    code = call_raw(env, service, method, bodies, token)
    assert code not in FORBIDDEN, f"{method.name} answered {code.name}"
    if code != grpc.StatusCode.OK:
        assert env.digest() == before, f"{method.name} answered {code.name} but changed stored rows"
    return code


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)


@pytest.mark.parametrize("service,method", METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
@HYPOTHESIS
@given(data=st.data())
def test_arbitrary_messages_never_answer_internal_or_unknown_and_an_error_changes_nothing(env, service, method, data):
    requests = data.draw(
        st.lists(message_of(method.input_type, env), min_size=1, max_size=3 if method.client_streaming else 1)
    )
    token = data.draw(st.sampled_from([env.admin, env.token_a, env.token_b]))
    judge(env, service, method, [r.SerializeToString() for r in requests], token)


@pytest.mark.parametrize("service,method", METHODS, ids=[f"{s.name}.{m.name}" for s, m in METHODS])
@settings(HYPOTHESIS, max_examples=10)
@given(data=st.data())
def test_random_bytes_as_the_request_body_never_answer_internal_or_unknown(env, service, method, data):
    body = data.draw(st.binary(max_size=512) | st.sampled_from([b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", b"\x08"]))
    judge(env, service, method, [body], env.admin)


def named_cases(env: Env) -> list[tuple[str, str, object]]:
    """(service, rpc, request) worst cases every run tries, whatever hypothesis draws."""
    tenant = env.tenant_a
    recent = now_us() - 10 * MINUTE_US

    def events(*items):
        return u.RecordEventsRequest(tenant_id=tenant, events=list(items))

    def at(seconds: int, nanos: int = 0):
        e = event("ts-edge")
        e.occurred_at.seconds, e.occurred_at.nanos = seconds, nanos
        return e

    deep_meta = event("deep-meta")
    deep_meta.metadata.update(deep(30))
    big_meta = event("big-meta")
    big_meta.metadata.update({"blob": "z" * 5000})
    cases = [
        ("UsageService", "RecordEvents", events(*[event(f"over-{n}") for n in range(1001)])),
        ("UsageService", "RecordEvents", events(deep_meta, big_meta)),
        (
            "UsageService",
            "RecordEvents",
            events(at(2**62), at(-(2**62)), at(0, -1), at(recent // 10**6, 10**9), at(2**63 - 1, 2**31 - 1)),
        ),
        (
            "UsageService",
            "RecordEvents",
            events(event("x" * 100_000), event("nul\x00id"), event("huge-actor", actor_id="a" * 100_000)),
        ),
        ("UsageService", "RecordEvents", u.RecordEventsRequest(tenant_id="t\x00" * 50_000, events=[event("e")])),
        ("UsageService", "GetUsage", u.GetUsageRequest(tenant_id=tenant, start_time=ts(0), end_time=ts(2**62))),
        ("UsageService", "GetUsage", u.GetUsageRequest(tenant_id=tenant, metrics=["m"] * 10_000)),
        (
            "UsageService",
            "GetUsage",
            u.GetUsageRequest(tenant_id="bad tenant!", start_time=at(0, 0).occurred_at, end_time=at(0, -1).occurred_at),
        ),
        ("UsageService", "ListEvents", u.ListEventsRequest(tenant_id=tenant, end_time=at(0, 2**31 - 1).occurred_at)),
        ("UsageService", "ListEvents", u.ListEventsRequest(tenant_id=tenant, page_size=-1, page_token="%%%")),
        (
            "UsageService",
            "ListAggregates",
            u.ListAggregatesRequest(
                tenant_id=tenant, metric="api.requests", period=999, start_time=ts(recent - DAY_US)
            ),
        ),
        (
            "UsageService",
            "ListAggregates",
            u.ListAggregatesRequest(
                tenant_id=tenant, metric="api.requests", period=2, start_time=at(2**62).occurred_at
            ),
        ),
        ("UsageAdminService", "UpsertMetric", u.UpsertMetricRequest(metric=u.Metric(name="m.x", classification=999))),
        (
            "UsageAdminService",
            "PurgeEvents",
            u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(-(2**62) * 10**6 // 10**6)),
        ),
        (
            "PolicyService",
            "ResolveMode",
            pb.ResolveModeRequest(
                tenant_id=tenant, user_id="u", feature_id="f", requested_mode=999, min_policy_version=2**63 - 1
            ),
        ),
        (
            "PolicyService",
            "ResolveModes",
            pb.ResolveModesRequest(tenant_id=tenant, user_id="u", feature_ids=["f"] * 1001),
        ),
        (
            "PolicyAdminService",
            "SetOverride",
            pb.SetOverrideRequest(
                tenant_id=tenant,
                role_id=next(iter(env.worlds[0].roles)),
                feature_id=env.worlds[0].feature,
                cap=999,
                reason="r" * 100_000,
            ),
        ),
        ("PolicyAdminService", "ImportRoles", pb.ImportRolesRequest(roles=[pb.Role(role_id="R\x00", default_cap=-1)])),
    ]
    cases += [
        (service, rpc, message(tenant_id=tenant, page_token=page_token))
        for page_token in [*env.page_tokens, base64.b64encode(b"\x00" * 40).decode(), "!!", "a" * 100_000]
        for service, rpc, message in [
            ("UsageService", "ListEvents", u.ListEventsRequest),
            ("UsageAdminService", "ListAuditRecords", u.ListAuditRecordsRequest),
            ("PolicyAdminService", "ListBindings", pb.ListBindingsRequest),
            ("PolicyAdminService", "ListOverrides", pb.ListOverridesRequest),
            ("PolicyAdminService", "ListAuditRecords", pb.ListAuditRecordsRequest),
        ]
    ]
    return cases


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size, length = len(payload), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return bytes([number << 3 | 2]) + length + payload


def nested_metadata_request(tenant: str, levels: int) -> bytes:
    """A RecordEventsRequest whose one event's metadata Struct nests `levels` deep."""
    struct = b""
    for _ in range(levels):  # Struct.fields{key "n", value Value.struct_value(...)}
        struct = _field(1, _field(1, b"n") + _field(2, _field(5, struct)))
    return _field(1, tenant.encode()) + _field(2, event("deep").SerializeToString() + _field(9, struct))


def test_named_worst_cases_never_answer_internal_or_unknown_and_other_tenants_page_tokens_are_refused(env):
    by_name = {(service.name, method.name): (service, method) for service, method in METHODS}
    for service_name, rpc, request in named_cases(env):
        service, method = by_name[(service_name, rpc)]
        for token in (env.admin, env.token_a):
            judge(env, service, method, [request.SerializeToString()], token)
    # Metadata nested 200 deep, past what the parser accepts: built by hand, as no client library would.
    record_events = by_name[("UsageService", "RecordEvents")]
    assert (
        judge(env, *record_events, [nested_metadata_request(env.tenant_a, 200)], env.admin)
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # Tenant B's page tokens, replayed for tenant A, are refused: a token belongs to its listing.
    usage = usage_pb2_grpc.UsageServiceStub(env.usage_channel)
    stolen = env.page_tokens[0]
    with pytest.raises(grpc.RpcError) as refused:
        usage.ListEvents(
            u.ListEventsRequest(tenant_id=env.tenant_a, page_size=1, page_token=stolen),
            metadata=support.bearer(env.admin),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sql_shaped_strings_are_stored_and_returned_literally(env):
    usage = usage_pb2_grpc.UsageServiceStub(env.usage_channel)
    # A tenant of its own: the fuzzing above may have purged tenant_a's history up to now.
    events_tenant, token = support.new_tenant(), env.admin
    sent = []
    for n, text in enumerate(SQL_SHAPED):
        e = event(f"sql-{n}-{text}", actor_id=text, correlation_id=f"corr {text}", at_us=now_us() - 2 * MINUTE_US - n)
        e.metadata.update({"text": text, text: [text]})
        sent.append(e)
    assert {r.verdict for r in record(usage, token, events_tenant, sent)} == {u.VERDICT_ACCEPTED}
    for e in sent:  # a filter on the literal text finds that one event, not a LIKE pattern's matches
        found = list_all(usage, token, events_tenant, actor_id=e.actor_id)
        assert [f.event.event_id for f in found] == [e.event_id]
        stored = found[0].event
        assert (stored.actor_id, stored.correlation_id, stored.metadata) == (e.actor_id, e.correlation_id, e.metadata)
        by_correlation = list_all(usage, token, events_tenant, correlation_id=e.correlation_id)
        assert [f.event.event_id for f in by_correlation] == [e.event_id]

    admin = Client(policy_pb2_grpc.PolicyAdminServiceStub(env.policy_channel), env.admin)
    tenant, world = env.tenant_a, env.worlds[0]
    role = next(iter(world.roles))
    for text in SQL_SHAPED:
        admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id=f"user {text}", role_id=role))
    override = admin.SetOverride(
        pb.SetOverrideRequest(
            tenant_id=tenant, role_id=role, feature_id=world.feature, cap=pb.MODE_OBSERVE, reason=" | ".join(SQL_SHAPED)
        )
    )
    listed = admin.ListOverrides(pb.ListOverridesRequest(tenant_id=tenant)).overrides
    assert [o.reason for o in listed if o.override_id == override.override.override_id] == [" | ".join(SQL_SHAPED)]
    users = {b.user_id for b in admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant, page_size=1000)).bindings}
    assert {f"user {text}" for text in SQL_SHAPED} <= users
    for text in ("%", "_"):  # a user filter on a wildcard character matches that user only
        only = admin.ListBindings(pb.ListBindingsRequest(tenant_id=tenant, user_id=f"user {text}")).bindings
        assert [b.user_id for b in only] == [f"user {text}"]
