"""python -m services.policy: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from shared.server import main

from services.policy.config import Settings
from services.policy.server import build

if __name__ == "__main__":
    sys.exit(main("policy", Settings, build))
