"""CheckEntitlement's shared reads of what Policy holds (service.entitlements.HeldReads), on both backends: calls
that ask while a read is under way share the next one, which starts after they arrived, so each sees every
reservation stored before it asked. The first read is paused on purpose after its statement (an injected pause,
the only thing not real here) so that the others arrive while it is under way."""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager

import pytest
from prometheus_client import REGISTRY

from tests import support
from tollgate.services.policy import tables
from tollgate.services.policy.domain.entitlements import OPEN, Reservation
from tollgate.services.policy.repository import entitlements as repository
from tollgate.services.policy.service.entitlements import HeldReads
from tollgate.shared.clock import now_micros
from tollgate.shared.db import create_engine_for

METRIC = "api.requests"
HOUR_US = 3600 * 10**6


class PausedAfterFirstRead:
    """The engine's connections, the first one held after its read until `go` is set: the fault injected."""

    def __init__(self, engine):
        self.engine, self.opened = engine, 0
        self.paused, self.go = threading.Event(), threading.Event()

    @contextmanager
    def connect(self):
        self.opened += 1
        first = self.opened == 1
        with self.engine.connect() as connection:
            yield connection
        if first:
            self.paused.set()
            assert self.go.wait(30)


@pytest.fixture
def engine(dbs):
    made = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pre_ping=False, autocommit=True)
    yield made
    made.dispose()


def _hold(engine, tenant: str, user: str, amount: int) -> None:
    now = now_micros()
    reservation = Reservation(
        f"rsv_{secrets.token_hex(12)}", tenant, user, METRIC, amount, secrets.token_hex(6), OPEN, now, now + HOUR_US
    )
    with engine.begin() as connection:
        repository.insert_reservations(connection, [reservation])


def _reads_and_calls() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("tollgate_policy_check_read_calls_count") or 0.0
    return count, REGISTRY.get_sample_value("tollgate_policy_check_read_calls_sum") or 0.0


def _reserved(found) -> int:
    _, held = found
    return held[METRIC].reserved_in(())[0]


def test_calls_arriving_during_a_read_share_the_next_one_which_sees_what_was_stored_before_they_asked(engine):
    tenant = f"t_{secrets.token_hex(4)}"
    now = now_micros()
    question = {METRIC: repository.Asked("", ((now - HOUR_US, now + HOUR_US),), 0)}
    connections, reads = PausedAfterFirstRead(engine), HeldReads()
    _hold(engine, tenant, "ann", 3)
    before = _reads_and_calls()
    answers: dict[str, tuple] = {}

    def ask(name: str) -> None:
        answers[name] = reads.read(connections, tenant, question)  # type: ignore[arg-type]

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert connections.paused.wait(30)
    _hold(engine, tenant, "bob", 4)  # stored while the first read is under way, before the others ask
    later = [threading.Thread(target=ask, args=(name,)) for name in ("second", "third")]
    for thread in later:
        thread.start()
    # the first read's call, and both others queued behind it
    queued = support.wait_until(lambda: reads.callers(tenant, question) == 3, seconds=30, every=0.001)
    connections.go.set()
    assert queued, "the later calls did not wait for the read under way"
    for thread in [first, *later]:
        thread.join(30)
    assert _reserved(answers["first"]) == 3
    assert _reserved(answers["second"]) == _reserved(answers["third"]) == 7
    assert answers["second"] is answers["third"]  # one read answered both
    assert connections.opened == 2
    assert _reads_and_calls() == (before[0] + 2, before[1] + 3)  # tollgate_policy_check_read_calls: 1 call, then 2


def test_a_lone_call_reads_at_once_and_each_call_reads_anew_for_its_own_tenant(engine):
    tenant, other = f"t_{secrets.token_hex(4)}", f"t_{secrets.token_hex(4)}"
    now = now_micros()
    _hold(engine, tenant, "ann", 5)
    reads = HeldReads()
    whole = {METRIC: repository.Asked("", ((now - HOUR_US, now + HOUR_US),), 0)}
    assert _reserved(reads.read(engine, tenant, whole)) == 5
    assert _reserved(reads.read(engine, other, whole)) == 0
    _hold(engine, tenant, "ann", 2)
    assert _reserved(reads.read(engine, tenant, whole)) == 7  # each call its own read: nothing kept between calls
