"""`make bench`: every benchmark, each figure printed beside a reference measured in the same run.

Runs on PostgreSQL (TEST_DATABASE_URL, else the local server, else a throwaway cluster), in a
fresh database that is dropped afterwards. `python -m bench ingest resolve` runs a subset.
"""

from __future__ import annotations

import importlib
import os
import sys

from scripts import pgcluster

# Each module has run(admin_url) that prints its own figures and cleans up after itself.
BENCHES = [
    "ingest",
    "reads",
    "busy_day",
    "meters",
    "rollup_sqlite",
    "resolve",
    "http",
    "active_features",
    "entitlements",
    "recorder",
    "soak",
]


def main(argv: list[str]) -> int:
    chosen = argv or [name for name in BENCHES if name != "soak" or os.environ.get("BENCH_SOAK") == "1"]
    cluster = None
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url and pgcluster.answers():
        admin_url = pgcluster.LOCAL_URL
    if not admin_url:
        cluster = pgcluster.ThrowawayCluster().init().start()
        admin_url = cluster.url
    try:
        for name in chosen:
            try:
                module = importlib.import_module(f"bench.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"bench.{name}":
                    raise
                print(f"\n== {name}: not written yet")
                continue
            print(f"\n== {name}", flush=True)
            module.run(admin_url)
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
