"""python -m tollgate.services.policy: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from tollgate.services.policy.config import Settings
from tollgate.services.policy.server import build
from tollgate.shared.server import main

if __name__ == "__main__":
    sys.exit(main("policy", Settings, build))
