"""`python -m <package>`: serve the app with the chosen server (server.py), from the settings."""

import asyncio
import logging
import sys

from pydantic import ValidationError

from .config import Settings, describe_errors, get_settings
from .features import ConfigurationError
from .logging import configure_logging
from .main import FEATURES
from .server import serve

logger = logging.getLogger(__name__)


async def check_configuration(settings: Settings) -> None:
    for feature in FEATURES:
        if feature.check_configuration is not None:
            await feature.check_configuration(settings)


def prepare_workers(settings: Settings) -> None:
    """What the features do once before the workers start; a failure stops here, as a failed
    start-up would in a worker (exit code 3)."""
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
    try:
        asyncio.run(check_configuration(settings))
    except ConfigurationError as exc:
        sys.exit(f"Cannot start: {exc}")
    prepare_workers(settings)
    serve(settings)


if __name__ == "__main__":
    main()
