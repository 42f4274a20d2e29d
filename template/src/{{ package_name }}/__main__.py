"""`python -m <package>`: serve the app with uvicorn, configured from the settings."""

import signal
import sys

import uvicorn
from pydantic import ValidationError

from .config import Settings, describe_errors, get_settings
from .logging import configure_logging


def main() -> None:
    try:
        settings: Settings = get_settings()
    except ValidationError as exc:
        sys.exit(f"Invalid configuration:\n{describe_errors(exc)}")
    configure_logging(settings)
    # After a graceful shutdown uvicorn re-raises the stop signal; a clean stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(
        f"{__package__}.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=settings.graceful_timeout,
    )


if __name__ == "__main__":
    main()
