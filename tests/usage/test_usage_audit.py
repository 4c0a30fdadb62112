"""Usage's audit chain through real channels on both backends: UpsertMetric and PurgeEvents append a
record in their own transaction, refused and dry-run calls append nothing, tampering is found, and
concurrent writers never fork the chain."""

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select, update

from tests import support
from tests.conftest import status_of
from tests.usage_support import DAY_US, event, every_page, now_us, record, ts
from tollgate.audit.v1 import audit_pb2
from tollgate.services.usage import tables
from tollgate.shared.db import create_engine_for
from tollgate.usage.v1 import usage_pb2 as u

COLUMN = tables.audit_records.c


@pytest.fixture(scope="module")
def engine(dbs):
    engine = create_engine_for(dbs.usage_url, schema=tables.SCHEMA, pool_size=1)
    yield engine
    engine.dispose()


def token_id(token: str) -> str:
    return token.split("_")[1]  # tg_<token id>_<secret>


def records(stub, token: str, tenant: str = "") -> list[audit_pb2.AuditRecord]:
    """Every record of a listing ('' = the whole chain), following page tokens."""
    return every_page(
        lambda page_token: stub.ListAuditRecords(
            u.ListAuditRecordsRequest(tenant_id=tenant, page_size=1000, page_token=page_token),
            metadata=support.bearer(token),
            timeout=30,
        ),
        "records",
    )


def chain_length(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(tables.audit_records)).scalar_one()


def upsert(stub, token: str, name: str, description: str = "audited") -> u.UpsertMetricResponse:
    metric = u.Metric(name=name, classification=u.CLASSIFICATION_INFO, unit="thing", description=description)
    return stub.UpsertMetric(u.UpsertMetricRequest(metric=metric), metadata=support.bearer(token), timeout=30)


def purge(stub, token: str, tenant: str, before_us: int, dry_run: bool = False) -> u.PurgeEventsResponse:
    return stub.PurgeEvents(
        u.PurgeEventsRequest(tenant_id=tenant, before_time=ts(before_us), dry_run=dry_run),
        metadata=support.bearer(token),
        timeout=60,
    )


@pytest.fixture
def rolled_up_history(usage_stub, usage_admin_stub, admin_token, tenant):
    """Three events of the tenant three days ago, rolled up, so a purge two days back deletes them."""
    sent = [event(f"old-{n}", at_us=now_us() - 3 * DAY_US + n) for n in range(3)]
    assert {r.verdict for r in record(usage_stub, admin_token, tenant, sent)} == {u.VERDICT_ACCEPTED}
    usage_admin_stub.RunRollup(u.RunRollupRequest(tenant_id=tenant), metadata=support.bearer(admin_token), timeout=60)
    return now_us() - 2 * DAY_US


def test_upserting_a_metric_appends_a_record_naming_the_metric_and_the_token_linked_to_the_one_before(
    usage_admin_stub, admin_token, tenant
):
    name = f"audit.{tenant}"
    upsert(usage_admin_stub, admin_token, name)
    upsert(usage_admin_stub, admin_token, name, description="changed")
    chain = records(usage_admin_stub, admin_token)
    mine = [r for r in chain if r.target == f"catalog/metric/{name}"]
    assert [(r.action, r.actor, r.tenant_id) for r in mine] == [("UpsertMetric", token_id(admin_token), "")] * 2
    assert mine[0].change_digest != mine[1].change_digest  # the change itself is what the digest covers
    for before, after in zip(chain, chain[1:]):
        assert after.sequence == before.sequence + 1 and after.previous_hash == before.hash


def test_a_purge_appends_one_record_stating_the_cutoff_the_horizon_and_the_count_when_the_horizon_moves(
    usage_admin_stub, admin_token, tenant, engine, rolled_up_history
):
    cutoff = rolled_up_history
    report = purge(usage_admin_stub, admin_token, tenant, cutoff)
    assert report.events_deleted == 3
    purge(usage_admin_stub, admin_token, tenant, cutoff - DAY_US)  # the horizon stays: nothing to record
    [only] = records(usage_admin_stub, admin_token, tenant)
    assert (only.action, only.target, only.actor, only.tenant_id) == (
        "PurgeEvents",
        f"tenant/{tenant}/events",
        token_id(admin_token),
        tenant,
    )
    with engine.connect() as connection:
        change = connection.execute(select(COLUMN.change).where(COLUMN.sequence == only.sequence)).scalar_one()
    assert json.loads(change) == {
        "cutoff_us": cutoff,
        "previous_horizon_us": None,
        "horizon_us": cutoff,
        "events_before_horizon": 3,
    }


def test_a_dry_run_purge_appends_nothing(usage_admin_stub, admin_token, tenant, engine, rolled_up_history):
    before = chain_length(engine)
    assert purge(usage_admin_stub, admin_token, tenant, rolled_up_history, dry_run=True).events_deleted == 3
    assert chain_length(engine) == before
    assert records(usage_admin_stub, admin_token, tenant) == []


def test_refused_admin_writes_append_nothing(dbs, usage_admin_stub, admin_token, tenant, engine):
    tenant_admin = support.make_token(dbs, tenant=tenant, scopes=["usage:admin"])
    before = chain_length(engine)
    refused = [
        lambda: upsert(usage_admin_stub, admin_token, "Not A Name"),
        lambda: upsert(usage_admin_stub, tenant_admin, f"audit.{tenant}"),
        lambda: purge(usage_admin_stub, admin_token, tenant, now_us() + DAY_US),
        lambda: purge(usage_admin_stub, tenant_admin, support.new_tenant(), now_us() - DAY_US),
    ]
    assert [status_of(call) for call in refused] == [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    ]
    assert chain_length(engine) == before


def test_an_audit_row_altered_with_sql_is_reported_at_that_sequence(usage_admin_stub, admin_token, tenant, engine):
    for n in range(2):
        upsert(usage_admin_stub, admin_token, f"audit.{tenant}.{n}")
    target = next(
        r.sequence for r in records(usage_admin_stub, admin_token) if r.target == f"catalog/metric/audit.{tenant}.0"
    )  # not the newest: the chain goes on
    with engine.begin() as connection:  # the deliberate fault: a row rewritten behind the service's back
        original = connection.execute(select(COLUMN.actor).where(COLUMN.sequence == target)).scalar_one()
        connection.execute(update(tables.audit_records).where(COLUMN.sequence == target).values(actor="mallory"))
    try:
        report = usage_admin_stub.VerifyAudit(u.VerifyAuditRequest(), metadata=support.bearer(admin_token))
    finally:  # the chain is shared by the session's tests: put the row back whatever happened
        with engine.begin() as connection:
            connection.execute(update(tables.audit_records).where(COLUMN.sequence == target).values(actor=original))
    assert (report.ok, report.first_broken_sequence) == (False, target)
    assert report.records_checked == target - 1 and "hash" in report.problem
    healed = usage_admin_stub.VerifyAudit(u.VerifyAuditRequest(), metadata=support.bearer(admin_token))
    assert healed.ok and (healed.first_broken_sequence, healed.problem) == (0, "")


def test_eight_concurrent_metric_writers_leave_one_unbroken_chain_of_consecutive_sequences(
    usage_admin_stub, admin_token, tenant
):
    def writer(index: int) -> None:
        for n in range(5):  # a name of its own, then one every writer shares: both kinds of contention
            upsert(usage_admin_stub, admin_token, f"audit.{tenant}.w{index}.{n}")
            upsert(usage_admin_stub, admin_token, f"audit.{tenant}.shared", description=f"{index}-{n}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    chain = records(usage_admin_stub, admin_token)
    assert [r.sequence for r in chain] == list(range(1, len(chain) + 1))
    assert sum(r.target.startswith(f"catalog/metric/audit.{tenant}.") for r in chain) == 80
    report = usage_admin_stub.VerifyAudit(u.VerifyAuditRequest(), metadata=support.bearer(admin_token))
    assert report.ok and report.records_checked == len(chain)


def test_a_tenant_token_lists_its_own_records_only_and_cannot_verify_the_chain(
    dbs, usage_admin_stub, admin_token, tenant, rolled_up_history
):
    purge(usage_admin_stub, admin_token, tenant, rolled_up_history)
    own = support.make_token(dbs, tenant=tenant, scopes=["usage:admin"])
    reader = support.make_token(dbs, tenant=None, scopes=["usage:read"])
    assert [r.tenant_id for r in records(usage_admin_stub, own, tenant)] == [tenant]
    for call in [
        lambda: records(usage_admin_stub, own, support.new_tenant()),
        lambda: records(usage_admin_stub, own, ""),
        lambda: usage_admin_stub.VerifyAudit(u.VerifyAuditRequest(), metadata=support.bearer(own)),
        lambda: usage_admin_stub.VerifyAudit(u.VerifyAuditRequest(), metadata=support.bearer(reader)),
    ]:
        assert status_of(call) == grpc.StatusCode.PERMISSION_DENIED


def test_audit_records_page_oldest_first_and_a_page_token_serves_its_own_tenant_only(
    usage_admin_stub, admin_token, tenant
):
    for n in range(3):
        upsert(usage_admin_stub, admin_token, f"audit.{tenant}.p{n}")
    bearer = support.bearer(admin_token)
    first = usage_admin_stub.ListAuditRecords(u.ListAuditRecordsRequest(page_size=2), metadata=bearer)
    second = usage_admin_stub.ListAuditRecords(
        u.ListAuditRecordsRequest(page_size=2, page_token=first.next_page_token), metadata=bearer
    )
    sequences = [r.sequence for r in [*first.records, *second.records]]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4
    stolen = u.ListAuditRecordsRequest(tenant_id=tenant, page_token=first.next_page_token)
    assert (
        status_of(lambda: usage_admin_stub.ListAuditRecords(stolen, metadata=bearer))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
