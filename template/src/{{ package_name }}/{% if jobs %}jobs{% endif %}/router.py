"""GET /api/v1/jobs/{job_id}: where a job stands, and how it ended.

With auth on, a job is read by the caller who submitted it (see `Caller.may_read` in
security.py); to anyone else it does not exist. With auth off, its id is the only protection.
"""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from ..errors import NotFoundError
from ..openapi import error_response_doc
from ..security import CallerDep
from .models import JobStatus
from .queue import JobsDep

TAG = {"name": "jobs", "description": "Background jobs: where each one stands, and its result."}

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

Status = Literal["queued", "running", "succeeded", "failed"]


class JobAccepted(BaseModel):
    """The answer to a request that queued a job; `Location` names the job's URL."""

    job_id: uuid.UUID
    status: Literal["queued"] = "queued"


class JobOut(BaseModel):
    job_id: uuid.UUID
    status: Status = Field(examples=["succeeded"])
    result: dict[str, Any] | None = Field(
        description="What the job did, once it has succeeded; if it failed, what its committed "
        "steps did",
        examples=[{"created": 998, "skipped": 1, "invalid": 1, "errors": []}],
    )
    error: str | None = Field(
        description="Why the job failed; while it waits to be tried again, why the last attempt "
        "ended without an outcome",
        examples=[None],
    )


def job_url(job_id: uuid.UUID) -> str:
    return f"{router.prefix}/{job_id}"


@router.get(
    "/{job_id}",
    summary="A job's status and result",
    responses=error_response_doc(404, "No job with this id"),
)
async def read_job(
    job_id: Annotated[uuid.UUID, Path(description="The id the job was queued with")],
    jobs: JobsDep,
    caller: CallerDep,
) -> JobOut:
    job = await jobs.store.get(job_id)
    if job is None or not caller.may_read(job.submitted_by):
        raise NotFoundError("Job", job_id)
    status = JobStatus(job.status)
    return JobOut(job_id=job.id, status=status.value, result=job.result, error=job.error)
