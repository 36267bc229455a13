"""veo_nb: VEO video generation, pleasant inside Jupyter.

- :func:`connect` gives a :class:`VeoClient` (the real service with
  ``VEO_API_KEY``, otherwise an embedded emulator in demo mode).
- :class:`Tracker` polls tasks within the API's rules, keeps their history in
  SQLite and saves finished videos; :func:`generate` is the one-call path.
- :func:`panel` shows a tracker as a live ipywidgets dashboard.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._spec import UnknownModelWarning, register_model
from .client import VeoClient
from ._connect import connect
from .errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    DownloadError,
    InsufficientBalanceError,
    MissingAPIKeyError,
    NotFoundError,
    OwnershipError,
    RateLimitError,
    ResultExpiredError,
    SpendingCapError,
    TaskFailedError,
    TaskTimeoutError,
    ValidationError,
    VeoError,
)
from ._i18n import language, set_language
from .models import Task, TaskStatus
from .records import Event, TaskRecord
from .store import BaseStore, Store, StoreError
from .store_pg import PostgresStore
from .tracker import Tracker, generate

__version__ = "0.1.0"


def table(frame: Any, *, tasks: Any = None, title: str = "", limit: int | None = None) -> Any:
    """``frame`` (``tracker.tasks()``, ``history()``, ``summary()`` or a part
    of one) as a table for people: local times to the second, rounded
    numbers, no ``<NA>``/``None``, long error texts wrapped (whole on hover),
    and with ``tasks`` (records or ``tasks()``) each id's label and prompt
    beside it. Display it in a notebook; ``.frame`` is the table as strings."""
    from ._tables import Table

    return Table(frame, tasks=tasks, title=title, limit=limit)


def __getattr__(name: str) -> Any:
    # The panel pulls in ipywidgets' frontend machinery: load it on first use,
    # so scripts that only poll never pay for it.
    if name in ("panel", "VeoPanel"):
        widgets = importlib.import_module(f"{__name__}.widgets")
        return getattr(widgets, name)
    raise AttributeError(f"module 'veo_nb' has no attribute {name!r}")


__all__ = [
    "connect",
    "register_model",
    "UnknownModelWarning",
    "table",
    "set_language",
    "language",
    "VeoClient",
    "Tracker",
    "generate",
    "panel",
    "VeoPanel",
    "Store",
    "BaseStore",
    "PostgresStore",
    "StoreError",
    "Task",
    "TaskStatus",
    "TaskRecord",
    "Event",
    "VeoError",
    "ValidationError",
    "APIError",
    "APIConnectionError",
    "AuthenticationError",
    "MissingAPIKeyError",
    "NotFoundError",
    "RateLimitError",
    "InsufficientBalanceError",
    "DownloadError",
    "ResultExpiredError",
    "TaskTimeoutError",
    "TaskFailedError",
    "SpendingCapError",
    "OwnershipError",
]
