"""A recorder killed with SIGKILL loses nothing it persisted, and its successor double-counts nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import support
from tests.clients.test_recorder import METRIC, dead_target, totals
from tollgate.clients.recorder import UsageRecorder

COUNT = 3_000
ROOT = Path(__file__).resolve().parents[2]


def run_child_until_persisted_then_kill(target: str, token: str, tenant: str, spool: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder_child", target, token, tenant, spool, str(COUNT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout.readline().strip() == "persisted"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("server_up_for_the_child", [False, True], ids=["usage-down", "usage-up"])
def test_a_recorder_killed_with_sigkill_delivers_its_spool_after_restart_with_no_double_count(
    dbs, usage, usage_stub, tenant, tmp_path, server_up_for_the_child
):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read"])
    spool = str(tmp_path / "spool.db")
    # Usage up: the child is killed while some batches are answered, some in flight, some still spooled.
    target = f"127.0.0.1:{usage.port}" if server_up_for_the_child else dead_target()
    run_child_until_persisted_then_kill(target, token, tenant, spool)
    with UsageRecorder(f"127.0.0.1:{usage.port}", token, tenant, spool) as successor:
        held_after_crash = successor.counters().spooled
        assert successor.flush(timeout=60)
        counters = successor.counters()
    if not server_up_for_the_child:
        assert held_after_crash == COUNT and counters.sent == COUNT
    assert counters.sent + counters.duplicate == held_after_crash and counters.spooled == 0
    assert totals(usage_stub, token, tenant) == {METRIC: (sum(1 + i % 5 for i in range(COUNT)), COUNT)}
