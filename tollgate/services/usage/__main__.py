"""python -m tollgate.services.usage: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from tollgate.services.usage.config import Settings
from tollgate.services.usage.server import build
from tollgate.shared.server import main

if __name__ == "__main__":
    sys.exit(main("usage", Settings, build))
