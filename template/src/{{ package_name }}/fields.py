"""What every domain's records share: ids that fit a 32-bit column, timestamps in UTC."""

from datetime import UTC, datetime

MAX_ID = 2**31 - 1


def utc_now() -> datetime:
    return datetime.now(UTC)
