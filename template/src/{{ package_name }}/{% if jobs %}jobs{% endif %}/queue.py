"""Submitting jobs and running them: in this process, or through Redis for the workers.

With APP_JOBS_BROKER_URL unset (development and testing) a job runs as a task of the API
process that accepted it; jobs that a stopped process left unfinished run again when it starts.
With it set, jobs wait in a SAQ queue on Redis for `python -m <package>.worker`.

Either way the job's state lives in the database (models.py), and a job may run more than once
(a worker can die mid-job): handlers record their progress with the work it covers
(`JobRun.save`), so a rerun continues where the last committed step ended.
"""

import asyncio
import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from saq import Job as QueuedJob
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import UNAVAILABLE_ERRORS, Database
from ..errors import ServiceUnavailableError
from ..features import HealthCheck
from ..request_context import current_request_id, request_id_var
from ..resources import resources_of
from ..settings import Environment
from .models import Job, JobStatus
from .settings import JobsSettings
from .store import (
    DATABASE_UNAVAILABLE,
    STOPPED,
    UNFINISHED,
    JobStore,
    SupersededError,
    gave_up,
)

logger = logging.getLogger(__name__)

# The one function SAQ runs: it loads the job by id from the database and runs its handler.
RUN_JOB = "run_job"
BROKER_TIMEOUT_SECONDS = 2.0
# The wait before an attempt that found the database unavailable is tried again, doubled after
# each such attempt up to the maximum (the broker adds jitter).
RETRY_DELAY_SECONDS = 1.0
MAX_RETRY_DELAY_SECONDS = 60.0
# What a failed job's `error` says; the log line with the job's request id has the details.
FAILED_ERROR = "The job failed; the service's logs have the details under its request id"


@dataclass
class JobRun:
    """One attempt at a job, as its handler sees it."""

    id: uuid.UUID
    payload: str
    attempt: int
    # Where the committed work ends (the last attempt's, at first), and what it found so far.
    checkpoint: int
    progress: dict[str, Any] | None
    store: JobStore

    async def save(self, session: AsyncSession, checkpoint: int, progress: Any) -> None:
        """Record a step's progress in the transaction of the step's work.

        If that transaction does not commit, the attempt must end (its error does that).
        """
        await self.store.save_progress(session, self.id, self.checkpoint, checkpoint, progress)
        self.checkpoint, self.progress = checkpoint, progress


JobHandler = Callable[[JobRun], Awaitable[dict[str, Any]]]
"""Does a job's work and returns its result (JSON); raising marks the job failed."""


class Jobs:
    """The service's job queue: `submit` stores a job and hands it to whoever runs jobs."""

    def __init__(
        self, store: JobStore, settings: JobsSettings, broker: "BrokerDelivery | None"
    ) -> None:
        self.store = store
        self.settings = settings
        self.delivery = InProcessDelivery(self.run) if broker is None else broker
        self._broker = broker
        self._handlers: dict[str, JobHandler] = {}

    def health_checks(self) -> dict[str, HealthCheck]:
        return {} if self._broker is None else {"broker": self._broker.ping}

    async def register(self, kind: str, handler: JobHandler) -> None:
        """Name the handler of `kind`; run in this process, its unfinished jobs start again."""
        self._handlers[kind] = handler
        await self.delivery.resume(functools.partial(self.store.unfinished, kind))

    async def submit(self, kind: str, payload: str, submitted_by: str | None = None) -> Job:
        """Store the job, queued, then hand it over; answers 503 when the broker is down.

        `submitted_by` is the caller's subject (`caller.sub`): with auth on, only they (or an
        admin) may read the job; a job submitted by no one is read by admins only.
        """
        job = await self.store.create(kind, payload, current_request_id(), submitted_by)
        try:
            await self.delivery.deliver(job.id)
        except BrokerUnavailableError:
            await self.store.fail(job.id, "The job could not be queued")
            raise
        return job

    async def run(self, job_id: uuid.UUID) -> None:
        """One attempt at the job: its handler, its outcome recorded; safe to call twice."""
        job = await self.store.start(job_id)
        if job is None:
            logger.info("job %s is unknown or finished; nothing to do", job_id)
            return
        request_id_var.set(job.request_id)
        handler = self._handlers.get(job.kind)
        if handler is None or job.payload is None:
            await self.store.fail(job.id, f"No handler for jobs of kind {job.kind!r}")
            return
        if job.attempts > self.settings.jobs_max_attempts:
            await self.store.fail(job.id, gave_up(job.attempts - 1, job.error or UNFINISHED))
            return
        run = JobRun(job.id, job.payload, job.attempts, job.checkpoint, job.progress, self.store)
        logger.info("job %s (%s) started, attempt %d", job.id, job.kind, job.attempts)
        try:
            result = await handler(run)
        except SupersededError:
            logger.info("job %s: another attempt got further; this one stops", job.id)
            return
        except asyncio.CancelledError:
            # Stopped (shutdown, timeout): the job is queued again and a rerun continues it.
            with suppress(*UNAVAILABLE_ERRORS, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.store.requeue(job.id, STOPPED)), 2)
            raise
        except UNAVAILABLE_ERRORS:
            # The database is down, or a lock stayed held past APP_DATABASE_TIMEOUT_SECONDS: not
            # the job's fault, so it is tried again, until its attempts are spent.
            if job.attempts >= self.settings.jobs_max_attempts:
                logger.warning("job %s: the database is unavailable; giving up", job.id)
                await self.store.fail(job.id, gave_up(job.attempts, DATABASE_UNAVAILABLE))
                return
            logger.warning("job %s: the database is unavailable; retrying later", job.id)
            await self.store.requeue(job.id, DATABASE_UNAVAILABLE)
            raise
        except Exception:
            logger.exception("job %s (%s) failed", job.id, job.kind, extra={"job_id": str(job.id)})
            await self.store.fail(job.id, FAILED_ERROR)
            return
        await self.store.succeed(job.id, result)
        logger.info("job %s (%s) succeeded", job.id, job.kind)

    async def recover_lost(self, job_id: uuid.UUID, lost_before: datetime) -> None:
        """Queue again a job that the broker no longer holds, or fail it if no attempt is left."""
        max_attempts = self.settings.jobs_max_attempts
        outcome = await self.store.recover_lost(job_id, lost_before, max_attempts)
        if outcome is not None:
            logger.warning("job %s was lost by the job queue: %s", job_id, outcome.value)
        if outcome is JobStatus.QUEUED:
            await self.delivery.deliver(job_id)

    @property
    def queue(self) -> RedisQueue | None:
        """The broker's queue that workers consume; None when jobs run in this process."""
        return self.delivery.queue if isinstance(self.delivery, BrokerDelivery) else None

    async def close(self) -> None:
        if isinstance(self.delivery, BrokerDelivery):
            await self.delivery.close()
        else:
            await self.delivery.drain(self.settings.jobs_shutdown_seconds)


class BrokerUnavailableError(ServiceUnavailableError):
    def __init__(self) -> None:
        super().__init__(
            "The job queue is unavailable; retry shortly", headers={"Retry-After": "5"}
        )


class InProcessDelivery:
    """Runs each job as a task of this process (development and testing: no broker needed)."""

    def __init__(self, run: Callable[[uuid.UUID], Awaitable[None]]) -> None:
        self._run = run
        self._tasks: set[asyncio.Task[None]] = set()
        # Jobs running here now: the startup resume may find a job that `submit` just queued.
        self._running: set[uuid.UUID] = set()

    async def deliver(self, job_id: uuid.UUID) -> None:
        if job_id in self._running:
            return
        self._running.add(job_id)
        task = asyncio.create_task(self._run_logging_errors(job_id), name=f"job {job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A done callback, not a `finally`: a task cancelled before it starts runs none.
        task.add_done_callback(lambda _task: self._running.discard(job_id))

    async def resume(self, unfinished: Callable[[], Awaitable[Sequence[uuid.UUID]]]) -> None:
        """Run again, in the background, the jobs that a stopped process left unfinished."""
        task = asyncio.create_task(self._resume(unfinished), name="resume jobs")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resume(self, unfinished: Callable[[], Awaitable[Sequence[uuid.UUID]]]) -> None:
        try:
            job_ids = await unfinished()
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("could not look for unfinished jobs: %r", exc)
            return
        for job_id in job_ids:
            await self.deliver(job_id)

    async def _run_logging_errors(self, job_id: uuid.UUID) -> None:
        """Runs the job, and again while its attempts find the database unavailable."""
        delay = RETRY_DELAY_SECONDS
        while True:
            try:
                await self._run(job_id)
            except UNAVAILABLE_ERRORS:
                logger.warning("job %s: trying again in %.0f s", job_id, delay)
            else:
                return
            await asyncio.sleep(delay)
            delay = min(2 * delay, MAX_RETRY_DELAY_SECONDS)

    async def drain(self, seconds: float) -> None:
        """Let running jobs finish for `seconds`, then stop them (they rerun at the next start)."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class BrokerDelivery:
    """Puts each job's id on the SAQ queue in Redis, for the workers."""

    def __init__(self, url: str, settings: JobsSettings) -> None:
        self._redis = Redis.from_url(
            url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_keepalive=True,
            health_check_interval=30,
            # While Redis is down, a worker's calls back off instead of spinning.
            retry=Retry(ExponentialBackoff(cap=5, base=0.5), retries=3),
        )
        self.queue = RedisQueue(self._redis, name=settings.jobs_queue)
        self._settings = settings

    async def connect(self) -> None:
        await self.queue.connect()

    async def deliver(self, job_id: uuid.UUID) -> None:
        job = QueuedJob(
            RUN_JOB,
            kwargs={"job_id": str(job_id)},
            # The same key twice is one job: a job is never queued twice at once.
            key=str(job_id),
            timeout=self._settings.jobs_timeout_seconds,
            heartbeat=self._settings.jobs_heartbeat_seconds,
            retries=self._settings.jobs_max_attempts,
            retry_delay=RETRY_DELAY_SECONDS,
            retry_backoff=MAX_RETRY_DELAY_SECONDS,
        )
        try:
            await asyncio.wait_for(self.queue.enqueue(job), BROKER_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, RedisError) as exc:
            logger.warning("could not queue job %s: %r", job_id, exc)
            raise BrokerUnavailableError() from exc

    async def resume(self, _unfinished: Callable[[], Awaitable[Sequence[uuid.UUID]]]) -> None:
        """Nothing to do: the queue in Redis outlives every process."""

    async def ping(self) -> None:
        # redis-py below 8.2 types the reply "awaitable or not", 8.2 "awaitable"; from this
        # client it always is, and the check reads the same under both.
        reply = self._redis.ping()
        if inspect.isawaitable(reply):
            await asyncio.wait_for(reply, BROKER_TIMEOUT_SECONDS)

    async def close(self) -> None:
        try:
            await self.queue.disconnect()
        except (OSError, RedisError) as exc:  # the broker is gone: nothing left to tell it
            logger.warning("could not disconnect from the broker cleanly: %r", exc)
            await self._redis.aclose()


@asynccontextmanager
async def jobs_for(settings: JobsSettings, database: Database) -> AsyncIterator[Jobs]:
    url = settings.jobs_broker_url
    if url is None and settings.environment in (Environment.STAGING, Environment.PRODUCTION):
        raise RuntimeError(
            "APP_JOBS_BROKER_URL is required in staging and production: jobs run in workers there"
        )
    broker = None if url is None else BrokerDelivery(url, settings)
    if broker is not None:
        await broker.connect()
    jobs = Jobs(JobStore(database), settings, broker)
    try:
        yield jobs
    finally:
        await jobs.close()


async def get_jobs(request: Request) -> Jobs:
    return resources_of(request).jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]
