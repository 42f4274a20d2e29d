"""Jobs the broker lost: found by the workers, queued again, or failed once no attempt is left.

A job's state lives in the database and its delivery in Redis. Should Redis lose the delivery (a
restart without persistence, an eviction, a purge), or SAQ give up on a job without the database
hearing of it (the outcome of its last attempt could not be written), the job would wait
forever. So every APP_JOBS_SWEEP_SECONDS one of the workers looks for unfinished jobs unchanged
for APP_JOBS_LOST_AFTER_SECONDS that the broker no longer holds, and queues each again (a lost
delivery counts as an attempt) or, once its attempts are spent, fails it with its last error:
within APP_JOBS_LOST_AFTER_SECONDS + APP_JOBS_SWEEP_SECONDS (40 s with the defaults).
"""

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from redis.exceptions import RedisError
from saq import Status
from saq.queue.redis import RedisQueue

from ..db import UNAVAILABLE_ERRORS
from ..fields import utc_now
from .queue import BROKER_TIMEOUT_SECONDS, BrokerUnavailableError, Jobs
from .settings import JobsSettings

logger = logging.getLogger(__name__)

# Jobs looked up in the broker at once.
PAGE_SIZE = 500
# A delivery in one of these states is over: nothing in the broker will run the job again.
DELIVERY_OVER = (Status.COMPLETE, Status.FAILED, Status.ABORTED)
# Held by one worker at a time, for a sweep period: one sweep per period, however many workers.
SWEEP_LOCK = "lost-jobs-sweep"

T = TypeVar("T")


async def within_broker_timeout(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, BROKER_TIMEOUT_SECONDS)


async def recover_lost_jobs(jobs: Jobs, queue: RedisQueue, settings: JobsSettings) -> None:
    """One sweep, if no other worker has swept within the period."""
    lock = queue.redis.set(
        queue.namespace(SWEEP_LOCK), "1", nx=True, ex=settings.jobs_sweep_seconds
    )
    if not await within_broker_timeout(lock):
        return
    lost_before = utc_now() - timedelta(seconds=settings.jobs_lost_after_seconds)
    async for page in jobs.store.unchanged_since(lost_before, PAGE_SIZE):
        deliveries = await within_broker_timeout(queue.jobs(str(job.id) for job in page))
        for job, delivery in zip(page, deliveries, strict=True):
            if delivery is None or delivery.status in DELIVERY_OVER:
                await jobs.recover_lost(job.id, lost_before)


async def sweep_lost_jobs(jobs: Jobs, queue: RedisQueue, settings: JobsSettings) -> None:
    """Sweeps every period until cancelled; a database or broker that does not answer is left
    to the next sweep."""
    while True:
        await asyncio.sleep(settings.jobs_sweep_seconds)
        try:
            await recover_lost_jobs(jobs, queue, settings)
        except (*UNAVAILABLE_ERRORS, RedisError, TimeoutError) as exc:
            logger.warning("could not look for lost jobs: %r", exc)
        except BrokerUnavailableError:
            logger.warning("could not queue a lost job again; the next sweep tries again")
