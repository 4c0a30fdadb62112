"""`make test`: pick a PostgreSQL server (TEST_DATABASE_URL, the local one, or a throwaway
cluster), then run the whole suite on SQLite and PostgreSQL."""

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
        command = [sys.executable, "-m", "pytest", *sys.argv[1:]]
        return subprocess.call(command, env=env)
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
