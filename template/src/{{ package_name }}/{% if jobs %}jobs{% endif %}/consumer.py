"""The worker's side of the queue: SAQ takes jobs off Redis and runs them until shutdown.

A running job beats every third of APP_JOBS_HEARTBEAT_SECONDS. A job whose worker died (killed,
out of memory, its node gone) stops beating; every APP_JOBS_SWEEP_SECONDS a worker looks for
such jobs and queues them again, so another worker picks the job up within heartbeat + sweep +
5 seconds (SAQ's wait for the dead worker to abort it): 30 s with the defaults.

A job that Redis lost (restarted empty, say) is found by lost.py's sweep and queued again.

At shutdown (SIGTERM) the worker takes no new job; running jobs get APP_JOBS_SHUTDOWN_SECONDS to
finish, then they are stopped and queued again at once.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError
from saq import Worker
from saq.queue.redis import RedisQueue
from saq.types import Context, PartialTimersDict

from ..features import Feature
from ..resources import Resources
from .lost import sweep_lost_jobs
from .queue import RUN_JOB, Jobs
from .settings import JobsSettings

logger = logging.getLogger(__name__)

# How long an idle worker waits on Redis for a job before it checks whether it should stop.
DEQUEUE_TIMEOUT_SECONDS = 1


class Consumer:
    def __init__(self, jobs: Jobs, queue: RedisQueue, settings: JobsSettings) -> None:
        self._jobs = jobs
        self._queue = queue
        self._settings = settings
        self._heartbeat_seconds = settings.jobs_heartbeat_seconds / 3
        # SAQ's defaults, but for the sweep for jobs whose worker died.
        timers: PartialTimersDict = {
            "schedule": 1,
            "worker_info": 10,
            "sweep": settings.jobs_sweep_seconds,
            "abort": 1,
        }
        self.worker: Worker[Context] = Worker(
            queue,
            functions=[(RUN_JOB, self.run_queued_job)],
            concurrency=settings.jobs_concurrency,
            timers=timers,
            dequeue_timeout=DEQUEUE_TIMEOUT_SECONDS,
            shutdown_grace_period_s=settings.jobs_shutdown_seconds,
        )
        # The server hosting the worker handles the signals and stops it through its lifespan.
        self.worker.SIGNALS = []
        self._task: asyncio.Task[None] | None = None
        self._sweep: asyncio.Task[None] | None = None

    async def run_queued_job(self, ctx: Context, *, job_id: str) -> None:
        """Run one job, beating all along so that no other worker takes it over."""
        queued = ctx["job"]

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat_seconds)
                try:
                    await queued.update()
                except (OSError, RedisError) as exc:
                    logger.warning("job %s: heartbeat failed: %r", job_id, exc)

        heartbeat = asyncio.create_task(beat())
        try:
            await self._jobs.run(uuid.UUID(job_id))
        finally:
            heartbeat.cancel()

    def start(self) -> None:
        self._task = asyncio.create_task(self.worker.start(), name="job worker")
        self._sweep = asyncio.create_task(
            sweep_lost_jobs(self._jobs, self._queue, self._settings), name="lost jobs sweep"
        )

    async def stop(self) -> None:
        """No new jobs; running ones finish within the grace period or are queued again."""
        if self._sweep is not None:
            self._sweep.cancel()
            await asyncio.gather(self._sweep, return_exceptions=True)
        # SAQ's stop waits for all of its tasks, its periodic ones (which sleep up to 10 s
        # between rounds) included: those are stopped here, so that only jobs are waited for.
        for task in self.worker.tasks:
            if task.get_name() != "process":
                task.cancel()
        self.worker.event.set()
        if self._task is not None:
            await self._task

    async def check(self) -> None:
        """Readiness: the worker is still taking jobs."""
        if self._task is None or self._task.done():
            raise RuntimeError("the job worker has stopped")
        if self._sweep is None or self._sweep.done():
            raise RuntimeError("the sweep for lost jobs has stopped")


@asynccontextmanager
async def running_consumer(settings: JobsSettings, jobs: Jobs) -> AsyncIterator[Consumer]:
    """A consumer taking jobs off Redis until the context ends."""
    if jobs.queue is None:
        raise RuntimeError("APP_JOBS_BROKER_URL is not set: a worker takes its jobs from Redis")
    consumer = Consumer(jobs, jobs.queue, settings)
    consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def consuming(resources: Resources) -> AsyncIterator[None]:
    async with running_consumer(resources.settings, resources.jobs) as consumer:
        resources.health_checks["worker"] = consumer.check
        yield


# Listed last by the worker: it takes jobs once every domain has registered its handlers.
feature: Feature[object] = Feature(name="job worker", lifespan=consuming)
