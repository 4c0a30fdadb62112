"""The snapshot cache's shared loads (cache.SnapshotCache), on both backends: calls that find a tenant's snapshot
missing while a load of it is under way share the next load, which starts after they arrived, so each sees every
policy write made before it asked. The first load is paused on purpose after its read (an injected pause, the only
thing not real here) so that the others arrive while it is under way."""

from __future__ import annotations

import threading
from functools import partial

from prometheus_client import REGISTRY

from tests import policy_support as ps
from tests import support
from tollgate.policy.v1 import policy_pb2 as pb
from tollgate.services.policy import tables
from tollgate.services.policy.cache import SnapshotCache
from tollgate.services.policy.service import snapshots
from tollgate.shared.db import create_engine_for, session_factory


class PausedAfterFirstLoad:
    """A tenant's snapshot read from the database, the first read held after it returns until `go` is set."""

    def __init__(self, load):
        self.load, self.loads = load, 0
        self.paused, self.go = threading.Event(), threading.Event()

    def __call__(self, tenant_id: str):
        self.loads += 1
        first = self.loads == 1
        snapshot = self.load(tenant_id)
        if first:
            self.paused.set()
            assert self.go.wait(30)
        return snapshot


def _loads_and_calls() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("tollgate_policy_snapshot_load_calls_count") or 0.0
    return count, REGISTRY.get_sample_value("tollgate_policy_snapshot_load_calls_sum") or 0.0


def test_calls_missing_a_snapshot_during_a_load_share_the_next_one_which_sees_writes_made_before_they_asked(
    dbs, policy_admin_stub, admin_token, tenant
):
    admin = ps.Client(policy_admin_stub, admin_token)
    world = ps.build_world(admin, tenant, tenant_max=pb.MODE_AUTONOMOUS)
    engine = create_engine_for(dbs.policy_url, schema=tables.SCHEMA, pool_size=2)
    try:
        loader = PausedAfterFirstLoad(partial(snapshots.load, sessions=session_factory(engine)))
        cache = SnapshotCache(loader)
        before = _loads_and_calls()
        answers: dict[str, object] = {}

        def ask(name: str) -> None:
            answers[name] = cache.get(tenant)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert loader.paused.wait(30)
        admin.SetTenantPolicy(  # written while the first load is under way, before the others ask
            pb.SetTenantPolicyRequest(
                tenant_policy=pb.TenantPolicy(
                    tenant_id=tenant, max_mode=pb.MODE_OBSERVE, default_role_id=next(iter(world.roles))
                )
            )
        )
        later = [threading.Thread(target=ask, args=(name,)) for name in ("second", "third")]
        for thread in later:
            thread.start()
        # the first load's call, and both others queued behind it
        queued = support.wait_until(lambda: cache.loading(tenant) == 3, seconds=30, every=0.001)
        loader.go.set()
        assert queued, "the later calls did not wait for the load under way"
        for thread in [first, *later]:
            thread.join(30)
    finally:
        engine.dispose()
    assert answers["first"].tenant_policy.max_mode == pb.MODE_AUTONOMOUS  # type: ignore[attr-defined]
    assert answers["second"] is answers["third"]  # one load answered both
    assert answers["second"].tenant_policy.max_mode == pb.MODE_OBSERVE  # type: ignore[attr-defined]
    assert loader.loads == 2
    assert _loads_and_calls() == (before[0] + 2, before[1] + 3)  # tollgate_policy_snapshot_load_calls: 1, then 2
