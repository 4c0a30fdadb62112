"""entitlements.reserve_if_room on PostgreSQL, the only backend it sends on (SQLite has no data-modifying CTE), with
both ways Policy's pool sends it: SQL PREPARE in one simple query (POLICY_DB_POOLING=DIRECT) and psycopg's pipeline
with its own prepares (TRANSACTION)."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from tests import support
from tollgate.services.policy import tables
from tollgate.services.policy.domain.entitlements import OPEN, Reservation
from tollgate.services.policy.repository import entitlements
from tollgate.shared.clock import now_micros

METRIC = "api.requests"
HOUR_US = 3600 * 10**6


def _reservation(tenant: str, amount: int, key: str | None = None) -> Reservation:
    now = now_micros()
    return Reservation(
        f"rsv_{secrets.token_hex(12)}",
        tenant,
        "ann",
        METRIC,
        amount,
        key or secrets.token_hex(6),
        OPEN,
        now,
        now + HOUR_US,
    )


def _try(policy_engine, reservation: Reservation, room: int):
    now = reservation.create_us
    asked = entitlements.Asked("ann", ((now - HOUR_US, now + HOUR_US),), 0, reservation.idempotency_key)
    with policy_engine.begin() as connection:
        found = entitlements.reserve_if_room(
            connection,
            reservation.tenant_id,
            METRIC,
            now,
            [entitlements.Try(reservation, asked, [entitlements.Room(0, False, room)])],
        )
    return None if found is None else found[0]


def _stored(policy_engine, tenant: str) -> dict[str, int]:
    r = tables.reservations.c
    with policy_engine.connect() as connection:
        return dict(connection.execute(select(r.reservation_id, r.amount).where(r.tenant_id == tenant)).all())


def test_a_metric_whose_lock_row_this_process_has_not_seen_sends_nothing_and_stores_nothing(policy_engine):
    tenant = support.new_tenant()
    assert _try(policy_engine, _reservation(tenant, 1), room=100) is None
    assert _stored(policy_engine, tenant) == {}
    with policy_engine.connect() as connection:
        assert (
            connection.execute(
                select(tables.entitlement_locks).where(tables.entitlement_locks.c.tenant_id == tenant)
            ).all()
            == []
        )


def test_the_reservation_is_inserted_exactly_when_what_is_held_fits_the_room_and_its_key_is_free(policy_engine):
    tenant = support.new_tenant()
    now = now_micros()
    with policy_engine.begin() as connection:  # the metric's first Reserve: the lock row is made and seen
        entitlements.held_under_lock(connection, tenant, METRIC, now, [entitlements.Asked("ann", ((now, now + 1),), 0)])
    first = _reservation(tenant, 3)
    held, inserted = _try(policy_engine, first, room=0)  # nothing held: 0 <= 0
    assert inserted and held.reserved == {} and held.key_taken_by is None
    too_much = _reservation(tenant, 1)
    held, inserted = _try(policy_engine, too_much, room=2)  # 3 held > 2
    assert not inserted and held.reserved == {"": (3, 3)}
    just = _reservation(tenant, 1)
    held, inserted = _try(policy_engine, just, room=3)  # 3 held <= 3
    assert inserted
    again = _reservation(tenant, 1, key=first.idempotency_key)
    held, inserted = _try(policy_engine, again, room=100)
    assert not inserted and held.key_taken_by == first.reservation_id
    assert _stored(policy_engine, tenant) == {first.reservation_id: 3, just.reservation_id: 1}


def test_in_one_message_each_reservation_sees_the_ones_inserted_before_it_and_their_keys(policy_engine):
    tenant = support.new_tenant()
    now = now_micros()
    with policy_engine.begin() as connection:  # the metric's first Reserve: the lock row is made and seen
        entitlements.held_under_lock(connection, tenant, METRIC, now, [entitlements.Asked("ann", ((now, now + 1),), 0)])
    first, fits, too_much = _reservation(tenant, 3), _reservation(tenant, 2), _reservation(tenant, 2)
    same_key = _reservation(tenant, 1, key=first.idempotency_key)
    window = ((now - HOUR_US, now + HOUR_US),)

    def attempt(reservation: Reservation, room: int) -> entitlements.Try:
        asked = entitlements.Asked("ann", window, 0, reservation.idempotency_key)
        return entitlements.Try(reservation, asked, [entitlements.Room(0, False, room)])

    with policy_engine.begin() as connection:
        found = entitlements.reserve_if_room(
            connection,
            tenant,
            METRIC,
            now,
            # room 3: what is held may be at most 3 before the insert; 3 is after the first, 5 after the second
            [attempt(first, 3), attempt(fits, 3), attempt(too_much, 3), attempt(same_key, 100)],
        )
    assert found is not None
    (held_1, in_1), (held_2, in_2), (held_3, in_3), (held_4, in_4) = found
    assert in_1 and held_1.reserved == {}
    assert in_2 and held_2.reserved == {"": (3, 3)}
    assert not in_3 and held_3.reserved == {"": (5, 5)}
    assert not in_4 and held_4.key_taken_by == first.reservation_id
    assert _stored(policy_engine, tenant) == {first.reservation_id: 3, fits.reservation_id: 2}
