"""python -m services.usage: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from shared.server import main

from services.usage.config import Settings
from services.usage.server import build

if __name__ == "__main__":
    sys.exit(main("usage", Settings, build))
