"""python -m services.policy: read settings once, wire, serve until SIGTERM or Ctrl-C."""

import sys

from shared import logs
from shared.config import ConfigError, process_env
from shared.server import serve_until_signalled

from services.policy.config import Settings
from services.policy.server import build


def main() -> int:
    try:
        settings = Settings.from_env(process_env())
    except ConfigError as error:
        print(f"policy: configuration error: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    running = build(settings)
    serve_until_signalled(running, grace=settings.grace_seconds, drain_delay=settings.drain_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
