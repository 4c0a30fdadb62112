"""python -m services.usage: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from services.usage.config import Settings
from services.usage.server import build
from shared.server import main

if __name__ == "__main__":
    sys.exit(main("usage", Settings, build))
