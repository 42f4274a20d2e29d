"""The jobs table: each job's input, where it stands, and how it ended."""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, String, Text, Uuid
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UtcDateTime
from ..fields import utc_now


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
# A payload is a whole uploaded file: MySQL's TEXT holds 64 KB, its LONGTEXT what TEXT holds
# elsewhere.
PAYLOAD_TEXT = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    # The job's input; dropped once the job has finished.
    payload: Mapped[str | None] = mapped_column(PAYLOAD_TEXT)
    # How far the job got, committed with the work it covers: a rerun starts there.
    checkpoint: Mapped[int] = mapped_column(default=0)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    # The request that queued the job: its id is in every log line the job writes.
    request_id: Mapped[str] = mapped_column(String(128))
    # The subject of the token that queued the job, when auth is on: only they may read it.
    submitted_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
