"""python -m services.policy: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from services.policy.config import Settings
from services.policy.server import build
from shared.server import main

if __name__ == "__main__":
    sys.exit(main("policy", Settings, build))
