"""Jobs kept in the database, where every API process and every worker sees the same state."""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import Database
from ..fields import utc_now
from .models import FINISHED, Job, JobStatus


class SupersededError(Exception):
    """Another attempt at the same job got further first: this one stops without a trace."""


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
        await self._finish(job_id, JobStatus.SUCCEEDED, result=result)

    async def fail(self, job_id: uuid.UUID, error: str) -> None:
        await self._finish(job_id, JobStatus.FAILED, error=error)

    async def requeue(self, job_id: uuid.UUID) -> None:
        """Back to queued: the attempt was stopped and the job waits for the next one."""
        async with self._database.sessions.begin() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                .values(status=JobStatus.QUEUED, updated_at=utc_now())
            )

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
