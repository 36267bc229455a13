"""veo_nb: VEO video generation, pleasant inside Jupyter."""

from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    DownloadError,
    NotFoundError,
    RateLimitError,
    ResultExpiredError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
    VeoError,
)
from .models import Task, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "Task",
    "TaskStatus",
    "VeoError",
    "ValidationError",
    "APIError",
    "APIConnectionError",
    "AuthenticationError",
    "NotFoundError",
    "RateLimitError",
    "DownloadError",
    "ResultExpiredError",
    "TaskTimeoutError",
    "TaskFailedError",
]
