"""The audit chain through real channels on both backends: tampering is found, concurrency never forks it."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import select, update

from tests import policy_support as ps
from tests import support
from tests.conftest import status_of
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.services.policy import tables
from tollgate.shared.db import create_engine_for


@pytest.fixture
def admin(policy_admin_stub, admin_token):
    return ps.Client(policy_admin_stub, admin_token)


@pytest.fixture(scope="module")
def engine(dbs):
    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=1)
    yield engine
    engine.dispose()


def tenant_records(admin, tenant):
    return admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=tenant, page_size=1000)).records


def test_every_admin_write_appends_a_record_linked_to_the_one_before(admin, tenant):
    world = ps.build_world(admin, tenant)
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=next(iter(world.roles))))
    records = tenant_records(admin, tenant)
    assert [r.action for r in records] == ["SetTenantPolicy", "SetSubscription", "BindRole"]
    assert records[-1].target == f"tenant/{tenant}/user/u/role/{next(iter(world.roles))}"
    everything = admin.ListAuditRecords(pb.ListAuditRecordsRequest(page_size=1000)).records
    for before, after in zip(everything, everything[1:]):
        assert after.sequence == before.sequence + 1 and after.previous_hash == before.hash


def test_an_audit_row_altered_with_sql_is_reported_at_that_sequence(admin, engine, tenant):
    world = ps.build_world(admin, tenant)
    admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=next(iter(world.roles))))
    target = tenant_records(admin, tenant)[1].sequence  # not the newest: the chain continues after it
    column = tables.audit_records.c
    with engine.begin() as connection:
        original = connection.execute(select(column.actor).where(column.sequence == target)).scalar_one()
        connection.execute(update(tables.audit_records).where(column.sequence == target).values(actor="mallory"))
    try:
        report = admin.VerifyAudit(pb.VerifyAuditRequest())
    finally:  # the chain is shared by the session's tests: put the row back whatever happened
        with engine.begin() as connection:
            connection.execute(update(tables.audit_records).where(column.sequence == target).values(actor=original))
    assert (report.ok, report.first_broken_sequence) == (False, target)
    assert report.records_checked == target - 1 and "hash" in report.problem
    assert admin.VerifyAudit(pb.VerifyAuditRequest()).ok


def test_a_deleted_newest_record_is_reported_as_missing(admin, engine, tenant):
    world = ps.build_world(admin, tenant)
    last = admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id="u", role_id=next(iter(world.roles))))
    column = tables.audit_records.c
    with engine.begin() as connection:
        row = connection.execute(select(tables.audit_records).where(column.sequence == last.policy_version)).one()
        connection.execute(tables.audit_records.delete().where(column.sequence == last.policy_version))
    try:
        report = admin.VerifyAudit(pb.VerifyAuditRequest())
    finally:
        with engine.begin() as connection:
            connection.execute(tables.audit_records.insert().values(**row._mapping))
    assert (report.ok, report.first_broken_sequence) == (False, last.policy_version)
    assert "missing" in report.problem
    assert admin.VerifyAudit(pb.VerifyAuditRequest()).ok


def test_eight_concurrent_admin_writers_leave_one_unbroken_chain(admin, tenant):
    world = ps.build_world(admin, tenant)
    role = next(iter(world.roles))

    def writer(index: int) -> list[int]:
        return [
            admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id=f"w{index}-{n}", role_id=role)).policy_version
            for n in range(5)
        ]

    with ThreadPoolExecutor(8) as pool:
        versions = [v for batch in pool.map(writer, range(8)) for v in batch]
    assert len(set(versions)) == 40
    sequences = [r.sequence for r in tenant_records(admin, tenant) if r.action == "BindRole"]
    assert sorted(versions) == sequences
    report = admin.VerifyAudit(pb.VerifyAuditRequest())
    assert report.ok and report.records_checked >= max(versions)


def test_audit_records_page_oldest_first(admin, tenant):
    world = ps.build_world(admin, tenant)
    for n in range(3):
        admin.BindRole(pb.BindRoleRequest(tenant_id=tenant, user_id=f"u{n}", role_id=next(iter(world.roles))))
    pages, token = [], ""
    for _ in range(10):
        page = admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=tenant, page_size=2, page_token=token))
        pages.append([r.sequence for r in page.records])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [s for p in pages for s in p]
    assert flat == sorted(flat)


def test_only_a_platform_admin_verifies_the_chain_or_lists_every_tenants_records(dbs, policy_admin_stub, tenant):
    own = ps.Client(policy_admin_stub, support.make_token(dbs, tenant=tenant, scopes=["policy:admin"]))
    reader = ps.Client(policy_admin_stub, support.make_token(dbs, tenant=None, scopes=["policy:read"]))
    assert status_of(lambda: own.VerifyAudit(pb.VerifyAuditRequest())) == grpc.StatusCode.PERMISSION_DENIED
    assert status_of(lambda: own.ListAuditRecords(pb.ListAuditRecordsRequest())) == grpc.StatusCode.PERMISSION_DENIED
    assert status_of(lambda: reader.VerifyAudit(pb.VerifyAuditRequest())) == grpc.StatusCode.PERMISSION_DENIED


def test_listing_the_audit_records_of_an_unknown_tenant_is_not_found(dbs, policy_admin_stub, admin, tenant):
    stranger = support.new_tenant()
    with pytest.raises(grpc.RpcError) as caught:
        admin.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=stranger))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and stranger in caught.value.details()
    # Authorization still comes first: another tenant's credential learns nothing about whether it exists.
    other = ps.Client(policy_admin_stub, support.make_token(dbs, tenant=tenant, scopes=["policy:admin"]))
    assert (
        status_of(lambda: other.ListAuditRecords(pb.ListAuditRecordsRequest(tenant_id=stranger)))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    ps.build_world(admin, stranger)
    assert [r.action for r in tenant_records(admin, stranger)] == ["SetTenantPolicy", "SetSubscription"]
