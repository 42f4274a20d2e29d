"""`python -m <package>`: serve the app with uvicorn, configured from the settings."""

import logging
import signal
import sys

import uvicorn
from pydantic import ValidationError

from .config import Settings, describe_errors, get_settings
from .logging import configure_logging
from .main import FEATURES
from .server import connection_options

logger = logging.getLogger(__name__)


def prepare_workers(settings: Settings) -> None:
    """What the features do once before the workers start; a failure stops here, as a failed
    start-up would in a worker (uvicorn's exit code 3)."""
    for feature in FEATURES:
        if feature.before_workers is None:
            continue
        try:
            feature.before_workers(settings, settings.workers)
        except Exception:
            logger.exception("%s could not prepare the workers; not starting", feature.name)
            sys.exit(3)


def main() -> None:
    try:
        settings: Settings = get_settings()
    except ValidationError as exc:
        sys.exit(f"Invalid configuration:\n{describe_errors(exc)}")
    configure_logging(settings)
    prepare_workers(settings)
    # After a graceful shutdown uvicorn re-raises the stop signal; a clean stop exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
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
        **connection_options(settings),
    )


if __name__ == "__main__":
    main()
