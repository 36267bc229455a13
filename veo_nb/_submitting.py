"""Creating tasks: submit() and submit_many(), with re-run reuse, the daily
spending caps and the entries of creates not yet confirmed (a part of
:class:`~veo_nb.Tracker`)."""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _images, _reuse, _spending
from ._engine import (
    TaskState,
    Write,
)
from ._log import logger
from ._spec import build_create_payload
from .errors import (
    APIError,
    VeoError,
)
from .models import Task, TaskStatus
from .records import Event, TaskRecord, from_unix
from .store import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


from ._tracking import Tracking


class Submitting(Tracking):
    """submit(), submit_many() and spending() (see :class:`~veo_nb.Tracker`)."""

    def submit(self, prompt: str, *, label: str | None = None, owner: str | None = None,
               new: bool = False, **create_kwargs: Any) -> Task:
        """Create a video task (``model``, ``resolution``, ``aspect_ratio``,
        ``reference_images``, ``first_image``, ``last_image`` as for
        :meth:`VeoClient.create_video <veo_nb.client.VeoClient.create_video>`)
        and track it. Its first poll comes at the schedule's early check:
        the create response already told its status. ``owner`` is recorded as
        who submitted it (default: the tracker's, see :func:`~veo_nb.tracker.default_owner`).

        **A cell run again does not pay again**: in a notebook, when a cell
        runs again (a re-run, Run All, Run All after a kernel restart), its
        n-th submit of the same request (store, service, key, owner, model, prompt,
        options) returns the task its last run's n-th identical submit created,
        and one line says so. ``new=True`` creates another. A local image is
        the same when its bytes are (a URL image when its URL is), and is
        uploaded only when a task is created. A task that can never give its
        video is not reused (it failed, completed without one, or its link
        expired before the video was saved): the line says why a new one is
        created. Identical submits within one run are all created. Off
        with ``Tracker(reuse=False)``; in demo mode off unless turned on.

        Raises :class:`~veo_nb.StoreError` (with the new id in ``task_ids``)
        when the task was created but could not be saved to the store: it
        exists and is billed; the tracker follows it in memory and retries
        the write."""
        engine = self._engine
        client = self.client
        reused, request, place = self._rerun(prompt, owner, new, create_kwargs)
        if reused is not None:
            return reused
        self._check_caps(1)
        sent = time.time()
        placeholder = self._unconfirmed(prompt, label, owner, request, sent)
        try:
            task = client.create_video(prompt, **create_kwargs)
        except BaseException as exc:
            maybe_created = (isinstance(exc, APIError) and exc.reached
                             and (exc.status_code is None or exc.status_code >= 500))
            if maybe_created:  # the entry stays, and says why
                self._engine.commit(placeholder.task_id, Write(
                    replace(placeholder, error=_spending.unconfirmed_reason(sent, str(exc))),
                    [Event(placeholder.task_id, "note", _spending.UNCONFIRMED,
                           detail=f"no answer with the id: {exc}")], ("error",), {}))
            else:
                self._forget_unconfirmed(placeholder.task_id)
            raise
        now = time.time()
        record = self._tagged(replace(TaskRecord.from_task(
            task, label=label, request=request, now=from_unix(sent),
            url_lifetime_s=engine.settings.url_lifetime), owner=owner))
        with engine.lock:
            state = engine.states[task.id] = TaskState(
                record, 0, t0=sent, last_age=now - sent, contact_at=now,
                deadline=engine.settings.give_up_after)
            due = None if record.is_terminal else engine.next_due(state)  # refused at create
            state.record = record = replace(record, next_poll_at=from_unix(due))
        until = None if due is None else due + engine.settings.grace
        write = Write(record, [Event(task.id, "status", task.status_text,
                                     observed_at=from_unix(now), detail="created")],
                      None, {"contact_at": now, "poller": engine.me, "poll_until": until},
                      lambda st: setattr(st, "due", due))
        saved = engine.commit(task.id, write)
        self._forget_unconfirmed(placeholder.task_id)  # the real task replaces it
        if place is not None:
            try:
                self.store.remember(*place, task.id, sent)
            except Exception:  # noqa: BLE001 - the task exists; only its reuse is lost
                logger.warning("veo_nb: could not record %s for reuse on re-runs", task.id,
                               exc_info=True)
        if saved is None:
            raise StoreError(
                f"task {task.id} was created on the service (and is billed) but could not be "
                f"saved to {self.store_key}; the tracker follows it in memory and retries the "
                "write (keep this id)", task_ids=[task.id])
        return self.get(task.id)

    def _rerun(self, prompt: str, owner: str | None, new: bool, create_kwargs: dict[str, Any],
               ) -> tuple[Task | None, dict[str, Any], tuple[str, str, int] | None]:
        """Re-run reuse, decided before anything is uploaded or sent: the task
        an earlier run of this notebook cell created for the same request, if
        it can still give its video (one line says so, or why a new task is
        created); else None, the request to send (local images uploaded only
        now, their URLs put into ``create_kwargs``) and where to remember the
        new task for the next run (None outside a cell, or with ``new``)."""
        asked, images = self._asked(prompt, create_kwargs)
        cell = None if new else _reuse.current_cell()
        place: tuple[str, str, int] | None = None
        if cell is not None:
            key = self._reuse_key(asked, owner)
            place = (cell[0], key, _reuse.slot(self.store_key, cell, key))
            earlier = self._earlier(place)
            if earlier is not None:
                task_id, when, why_not = earlier
                if why_not is not None:
                    print(f"created a new task: {why_not} (same request in this cell, {when})")
                elif self.reuse:
                    print(f"reused {task_id} from {when} (same request in this cell); "
                          "submit(..., new=True) makes another")
                    task = self.get(task_id) if self._is_tracked(task_id) else \
                        self.track(task_id)
                    return task, asked, place
                else:
                    print(f"created a new task: in demo mode re-runs show live progress again; "
                          f"with a real key, {task_id} from {when} would have been reused (same "
                          "request in this cell; Tracker(reuse=True) or VEO_NB_REUSE=1 reuses "
                          "here too)")
        if images:  # local images uploaded only now that a task is to be created
            create_kwargs.update(self.client.image_urls(**images))
            asked = build_create_payload(prompt, unknown_models="send", **create_kwargs)
        return None, asked, place

    def _new_in_batch(self, rows: list[dict[str, Any]]) -> int:
        """How many of ``rows`` (keyword arguments of :meth:`submit`) would
        create a task: not those a re-run of the cell reuses (the rule of
        :meth:`submit`), nor those refused before sending."""
        cell = _reuse.current_cell() if self.reuse else None  # without reuse, every row creates
        ahead: Counter[str] = Counter()
        count = 0
        for row in rows:
            options = {k: v for k, v in row.items()
                       if k not in ("prompt", "label", "owner", "new")}
            try:
                request, _ = self._asked(row.get("prompt"), options)
            except (VeoError, TypeError):
                continue  # refused before sending: creates nothing
            if cell is not None and not row.get("new"):
                key = self._reuse_key(request, row.get("owner"))
                n = _reuse.seen(self.store_key, cell, key) + ahead[key]
                ahead[key] += 1
                earlier = self._earlier((cell[0], key, n))
                if earlier is not None and earlier[2] is None:
                    continue
            count += 1
        return count

    @staticmethod
    def _asked(prompt: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The create request as asked, before any upload, and its images
        (taken out of ``options``, local ones read: see
        :func:`~veo_nb._images.read_images`). The request is checked as the
        one sent will be, each local image named by its bytes' hash
        (:func:`~veo_nb._images.key_url`), so that a re-run's reuse key does
        not change with each upload's URL; without local images it is the
        request sent (and its key that of earlier versions)."""
        images = _images.read_images(
            {k: options.pop(k) for k in _images.IMAGE_ARGS if k in options})
        named = {k: _images.key_url(v) for k, v in images.items()}
        return build_create_payload(prompt, unknown_models="send", **options, **named), images

    def _reuse_key(self, request: dict[str, Any], owner: str | None) -> str:
        """What makes a submit of ``request`` (by ``owner``, default this
        tracker's) the same as an earlier run's (see :mod:`veo_nb._reuse`)."""
        client = self.client
        return _reuse.request_key(client.service, client.key_fingerprint, owner or self.owner,
                                  request)

    def _check_caps(self, adding: int) -> None:
        """Raise :class:`~veo_nb.SpendingCapError` when ``adding`` new tasks
        would pass the store's daily caps."""
        if self.caps == (None, None):
            return
        _spending.check(self.caps, self._spent_today(), adding)

    def _spent_today(self) -> tuple[int, float | None]:
        return self.store.spent_since(_spending.day_start(time.time()))

    def spending(self) -> dict[str, Any]:
        """Today's spending of this store (since local midnight, every process
        counted): ``tasks`` submitted, the ``amount`` the service reported
        (None when none), and the caps (``max_tasks``, ``max_amount``; None:
        none)."""
        count, amount = self._spent_today()
        return {"tasks": count, "amount": amount, "max_tasks": self.caps[0],
                "max_amount": self.caps[1]}

    def _unconfirmed(self, prompt: str, label: str | None, owner: str | None,
                     request: dict[str, Any], sent: float) -> TaskRecord:
        """Save the "may have been billed" entry of a create about to be sent
        (see :mod:`veo_nb._spending`); the real task replaces it."""
        record = self._tagged(TaskRecord(
            _spending.unconfirmed_id(), label=label, prompt=prompt, model=request.get("model"),
            resolution=request.get("resolution"), aspect_ratio=request.get("aspect_ratio"),
            status=TaskStatus.UNKNOWN, status_text=_spending.UNCONFIRMED,
            error=_spending.unconfirmed_reason(sent), first_seen_at=from_unix(sent),
            request=request, service=_spending.UNCONFIRMED_SERVICE, owner=owner))
        engine = self._engine
        with engine.lock:
            engine.states[record.task_id] = TaskState(record, 0, t0=sent, last_age=None)
        if engine.commit(record.task_id, Write(record, [], None, {}, notify=False)) is None:
            with engine.lock:
                engine.states.pop(record.task_id, None)  # and its pending write with it
            raise StoreError(
                f"could not record the request in {self.store_key} before sending it, so "
                "nothing was sent (no task was created or billed): try again once the store "
                "answers")
        return record

    def _forget_unconfirmed(self, task_id: str) -> None:
        """Erase a "may have been billed" entry the real task replaced; should
        the store fail now, the entry stays (visible, and dismissable)."""
        try:
            self.remove([task_id], delete=True, others=True)
        except Exception:  # noqa: BLE001 - the task itself is recorded (or reported)
            logger.warning("veo_nb: could not erase the entry %s of a task whose id arrived",
                           task_id, exc_info=True)

    def _earlier(self, place: tuple[str, str, int]) -> tuple[str, str, str | None] | None:
        """The task an earlier run of the cell created at ``place``: its id,
        local HH:MM, and why it cannot be reused (None: it can; see
        :func:`~veo_nb._reuse.why_not_reused`), or None when there is none
        (or it is gone)."""
        try:
            found = self.store.reused(*place)
            record = None if found is None else self.store.get(found[0])
        except Exception:  # noqa: BLE001 - a store problem: create, as without reuse
            logger.warning("veo_nb: could not look up an earlier run's task", exc_info=True)
            return None
        if found is None or record is None:
            return None
        return (found[0], datetime.fromtimestamp(found[1]).strftime("%H:%M"),
                _reuse.why_not_reused(record))

    def submit_many(self, prompts_or_dataframe: Iterable[str] | pd.DataFrame,
                    **defaults: Any) -> pd.DataFrame:
        """Submit many tasks; returns one row per input with ``task_id`` and
        ``error``. A row that is refused (validation, HTTP error) is reported
        in ``error`` and in one summary warning; the others go on. A task
        that was created but could not be saved has both its ``task_id`` and
        the store's ``error``.

        A DataFrame's columns are per-row keyword arguments of :meth:`submit`
        (``prompt`` required; ``label``, ``owner``, ``model``, ``resolution``, …);
        ``defaults`` apply where a row has no value."""
        import pandas as pd

        rows: list[dict[str, Any]]
        if isinstance(prompts_or_dataframe, pd.DataFrame):
            rows = [
                {str(k): v for k, v in row.items() if not _missing(v)}
                for row in prompts_or_dataframe.to_dict("records")
            ]
        else:
            rows = [{"prompt": p} for p in prompts_or_dataframe]
        if self.caps != (None, None):  # the whole batch first: none of it, or all
            self._check_caps(self._new_in_batch([{**defaults, **row} for row in rows]))
        out: list[dict[str, Any]] = []
        for row in rows:
            kwargs = {**defaults, **row}
            prompt, label = kwargs.pop("prompt", None), kwargs.pop("label", None)
            task_id: str | None
            error: str | None
            try:
                task_id, error = self.submit(prompt, label=label, **kwargs).id, None
            except StoreError as exc:
                task_id, error = (exc.task_ids[0] if exc.task_ids else None), str(exc)
            except (VeoError, TypeError) as exc:
                task_id, error = None, str(exc)
            out.append({"prompt": prompt, "label": label, "task_id": task_id, "error": error})
        frame: pd.DataFrame = pd.DataFrame(out, columns=["prompt", "label", "task_id", "error"])
        failed = frame["error"].notna()
        if failed.any():
            first = frame.loc[failed, "error"].iloc[0]
            warnings.warn(
                f"{int(failed.sum())} of {len(frame)} rows were not submitted or not saved "
                f"(see the 'error' column); first error: {first}",
                stacklevel=2,
            )
        return frame


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
