"""`make test`: pick a PostgreSQL server (TEST_DATABASE_URL, the local one, or a throwaway
cluster), then run the whole suite on SQLite and PostgreSQL, its files spread over TEST_WORKERS processes.

Each worker has its own session fixtures (its own databases and servers; tests isolate by tenant anyway), and a
file runs whole on one worker, so a module's fixture (a replayed image, a built wheel) is built once. Much of the
suite waits on servers, subprocesses and pip, so two workers use both cores; more than four would only add
PostgreSQL connections. TEST_WORKERS=0 runs everything in this one process."""

from __future__ import annotations

import os
import subprocess
import sys

from scripts import pgcluster


def main() -> int:
    env = dict(os.environ)
    cluster = None
    if env.get("TEST_DATABASE_URL"):
        print("PostgreSQL for tests: TEST_DATABASE_URL", flush=True)
    elif pgcluster.answers():
        env["TEST_DATABASE_URL"] = pgcluster.LOCAL_URL
        print(f"PostgreSQL for tests: local server {pgcluster.LOCAL_URL}", flush=True)
    else:
        cluster = pgcluster.ThrowawayCluster().init().start()
        env["TEST_DATABASE_URL"] = cluster.url
        print(f"PostgreSQL for tests: throwaway cluster {cluster.url}", flush=True)
    try:
        workers = env.get("TEST_WORKERS") or str(min(os.cpu_count() or 1, 4))
        spread = ["-n", workers, "--dist", "loadfile"] if workers != "0" else []
        command = [sys.executable, "-m", "pytest", *spread, *sys.argv[1:]]
        return subprocess.call(command, env=env)
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
