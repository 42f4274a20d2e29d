"""Background jobs: a queue whose state lives in the database, run in workers through Redis.

Domains register their kinds of job in their feature's `lifespan`
(`await resources.jobs.register(kind, handler)`) and submit jobs from their routes
(`await jobs.submit(kind, payload)`); `python -m <package>.worker` runs them. See queue.py for
where jobs run, and consumer.py for what happens when a worker dies.
"""

from ..features import Feature
from . import models as models
from .queue import JobRun, Jobs, JobsDep, jobs_for
from .router import TAG, JobAccepted, job_url, router
from .settings import JobsSettings

__all__ = [
    "JobAccepted",
    "JobRun",
    "Jobs",
    "JobsDep",
    "JobsSettings",
    "feature",
    "job_url",
    "jobs_for",
]

feature: Feature[JobsSettings] = Feature(name="jobs", routers=[router], tags=[TAG])
