"""A recorder process for the SIGKILL test: records events, waits until they are on disk, says so, hangs.

Usage: python -m tests.recorder_child TARGET TOKEN TENANT SPOOL COUNT
"""

from __future__ import annotations

import sys
import time

from tollgate.clients.recorder import UsageRecorder


def main(target: str, token: str, tenant: str, spool: str, count: str) -> None:
    recorder = UsageRecorder(
        target, token, tenant, spool, batch_size=100, max_batch_age=0.0, backoff_base=0.05, backoff_cap=0.2
    )
    for i in range(int(count)):
        recorder.record("leads.processed", 1 + i % 5, actor_id=f"u{i % 3}")
    # The guarantee under test: after persist() returns True, a crash loses nothing.
    print("persisted" if recorder.persist(timeout=30) else "not persisted", flush=True)
    time.sleep(600)  # the parent kills us with SIGKILL while the sender may be mid-batch


if __name__ == "__main__":
    main(*sys.argv[1:])
