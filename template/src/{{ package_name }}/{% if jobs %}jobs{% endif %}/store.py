"""Jobs kept in the database, where every API process and every worker sees the same state."""

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Database
from ..fields import utc_now
from .models import FINISHED, Job, JobStatus

# Why an attempt ended without an outcome; the job's `error` says it while the job waits for
# its next attempt, and after "Gave up after N attempts: " once none is left.
DATABASE_UNAVAILABLE = "the database was unavailable"
STOPPED = "the attempt was stopped (its timeout, or its worker shutting down)"
LOST = "the job queue lost it"
UNFINISHED = "no worker finished its last attempt"


class SupersededError(Exception):
    """Another attempt at the same job got further first: this one stops without a trace."""


def gave_up(attempts: int, reason: str) -> str:
    return f"Gave up after {attempts} attempt{'' if attempts == 1 else 's'}: {reason}"


class JobStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(
        self, kind: str, payload: str, request_id: str, submitted_by: str | None = None
    ) -> Job:
        job = Job(kind=kind, payload=payload, request_id=request_id, submitted_by=submitted_by)
        async with self._database.sessions.begin() as session:
            session.add(job)
        return job

    async def get(self, job_id: uuid.UUID) -> Job | None:
        async with self._database.sessions() as session:
            return await session.get(Job, job_id)

    async def start(self, job_id: uuid.UUID) -> Job | None:
        """The job, now running one more attempt; None when it is unknown or already finished."""
        async with self._database.sessions.begin() as session:
            job = await session.get(Job, job_id, with_for_update=True)
            if job is None or job.status in FINISHED:
                return None
            job.status = JobStatus.RUNNING
            job.attempts += 1
            job.updated_at = utc_now()
        return job

    async def save_progress(
        self, session: AsyncSession, job_id: uuid.UUID, since: int, checkpoint: int, progress: Any
    ) -> None:
        """Record, in the session of the work done, that the job got from `since` to `checkpoint`.

        The work and the record commit together or not at all. An attempt that finds the
        checkpoint moved (two workers on one job) raises SupersededError, so its work rolls back.
        """
        statement = (
            update(Job)
            .where(Job.id == job_id, Job.checkpoint == since)
            .values(checkpoint=checkpoint, progress=progress, updated_at=utc_now())
        )
        result = await session.execute(statement)
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise SupersededError(job_id)

    async def succeed(self, job_id: uuid.UUID, result: dict[str, Any]) -> None:
        await self._finish(job_id, JobStatus.SUCCEEDED, result=result, error=None)

    async def fail(self, job_id: uuid.UUID, error: str) -> None:
        """Failed with `error`; its result is what its committed steps recorded, if anything."""
        await self._finish(job_id, JobStatus.FAILED, error=error, result=Job.progress)

    async def requeue(self, job_id: uuid.UUID, error: str) -> None:
        """Back to queued: the attempt ended without an outcome (`error` says why), and the job
        waits for the next one."""
        async with self._database.sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, error=error, updated_at=utc_now())
            )

    async def unchanged_since(
        self, before: datetime, page_size: int
    ) -> AsyncIterator[Sequence[Job]]:
        """Unfinished jobs that have not changed since `before`, oldest first, a page at a time."""
        query = (
            select(Job)
            .where(Job.status.not_in(FINISHED), Job.updated_at < before)
            .order_by(Job.updated_at, Job.id)
            .limit(page_size)
        )
        page_query = query
        while True:
            async with self._database.sessions() as session:
                page = (await session.scalars(page_query)).all()
            if not page:
                return
            yield page
            last = tuple_(page[-1].updated_at, page[-1].id)
            page_query = query.where(tuple_(Job.updated_at, Job.id) > last)

    async def recover_lost(
        self, job_id: uuid.UUID, lost_before: datetime, max_attempts: int
    ) -> JobStatus | None:
        """A job the queue no longer holds: queued again, or failed once its attempts are spent.

        A lost delivery counts as an attempt, so that a job the queue keeps losing ends. None
        when the job has finished or changed since `lost_before` (another worker's sweep, say).
        """
        async with self._database.sessions.begin() as session:
            job = await session.get(Job, job_id, with_for_update=True)
            if job is None or job.status in FINISHED or job.updated_at >= lost_before:
                return None
            if job.status == JobStatus.QUEUED:
                job.attempts += 1
                reason = job.error or LOST
            else:
                reason = job.error or UNFINISHED
            job.updated_at = utc_now()
            if job.attempts < max_attempts:
                job.status, job.error = JobStatus.QUEUED, reason
                return JobStatus.QUEUED
            job.status, job.error = JobStatus.FAILED, gave_up(job.attempts, reason)
            job.result, job.payload = job.progress, None
            return JobStatus.FAILED

    async def unfinished(self, kind: str) -> Sequence[uuid.UUID]:
        async with self._database.sessions() as session:
            query = select(Job.id).where(Job.kind == kind, Job.status.not_in(FINISHED))
            return (await session.scalars(query.order_by(Job.created_at))).all()

    async def _finish(self, job_id: uuid.UUID, status: JobStatus, **values: Any) -> None:
        async with self._database.sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=status, payload=None, updated_at=utc_now(), **values)
            )
