"""Background jobs: a taskiq broker in process (embedded) or on RabbitMQ/Redis (scaled out).

Modules declare ``JobSpec``s in their ``Module.jobs``; code enqueues with
``platform.jobs.enqueue(name, **kwargs)``.
"""

from engineroom.core.jobs.brokers import DEFAULT_QUEUE_NAME
from engineroom.core.jobs.service import Jobs
from engineroom.core.jobs.spec import JobContext, JobFunc, JobSpec, check_job_kwargs

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "JobContext",
    "JobFunc",
    "JobSpec",
    "Jobs",
    "check_job_kwargs",
]
