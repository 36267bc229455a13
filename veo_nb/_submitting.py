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

from . import _images, _ledger, _reuse, _spending
from ._engine import (
    TaskState,
    Write,
)
from ._log import logger
from ._spec import build_create_payload
from .errors import SpendingCapError, VeoError
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
        return self._submit(prompt, label, owner, new, create_kwargs, None)

    def _submit(self, prompt: str, label: str | None, owner: str | None, new: bool,
                create_kwargs: dict[str, Any], entry: TaskRecord | None) -> Task:
        """:meth:`submit`, with the entry :meth:`submit_many` reserved for it
        (None: reserve one here); that entry is used or voided."""
        client = self.client
        try:
            reused, request, place = self._rerun(prompt, owner, new, create_kwargs)
        except BaseException:
            self._void(entry)
            raise
        if reused is not None:
            self._void(entry)
            return reused
        if entry is None:
            (entry,) = self._reserve([self._entry(prompt, label, owner, request)])
        sent = time.time()
        try:
            task = client.create_video(prompt, **create_kwargs)
        except BaseException as exc:
            if _spending.refused(exc):
                self._void(entry)
            else:  # the entry stays, and says why
                self._engine.commit(entry.task_id, Write(
                    replace(entry, error=_spending.unconfirmed_reason(sent, _spending.why(exc))),
                    [Event(entry.task_id, "note", _spending.UNCONFIRMED,
                           detail=f"no answer with the id: {_spending.why(exc)}")], ("error",), {}))
            raise
        return self._created(task, entry, label, owner, request, sent, place)

    def _created(self, task: Task, entry: TaskRecord, label: str | None, owner: str | None,
                 request: dict[str, Any], sent: float,
                 place: tuple[str, str, int] | None) -> Task:
        """Store and follow the task a create returned; its first write
        erases ``entry`` in the same transaction."""
        engine = self._engine
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

        def saved_with(st: TaskState) -> None:  # (the lock held) the entry went with it
            st.due = due
            engine.states.pop(entry.task_id, None)

        write = Write(record, [Event(task.id, "status", task.status_text,
                                     observed_at=from_unix(now), detail="created")],
                      None, {"contact_at": now, "poller": engine.me, "poll_until": until},
                      saved_with, replaces=entry.task_id)
        saved = engine.commit(task.id, write)
        if saved is not None:
            engine.notify(entry.task)  # views drop the entry
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

    def _creating(self, rows: list[dict[str, Any]]) -> dict[int, TaskRecord]:
        """The entries of the ``rows`` (keyword arguments of :meth:`submit`)
        that would create a task, by row: not those a re-run of the cell
        reuses, nor those the model table refuses."""
        cell = _reuse.current_cell() if self.reuse else None  # without reuse, every row creates
        ahead: Counter[str] = Counter()
        out: dict[int, TaskRecord] = {}
        for i, row in enumerate(rows):
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
            out[i] = self._entry(row.get("prompt"), row.get("label"), row.get("owner"), request)
        return out

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

    def _reserve(self, entries: list[TaskRecord]) -> list[TaskRecord]:
        """Check the caps and store ``entries`` (of creates about to be sent)
        with their reservation in the ledger, in one transaction; raises
        :class:`~veo_nb.SpendingCapError` (nothing stored) past a cap, and
        :class:`~veo_nb.StoreError` when the store cannot record them (then
        nothing is sent)."""
        caps = self.caps

        def check(spent: _ledger.Spent, expected: list[float | None]) -> None:
            _spending.check(caps, spent, expected)

        try:
            rows = self.store.reserve(entries, _spending.day_start(time.time()), check)
        except SpendingCapError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite3, psycopg, a closed store
            raise StoreError(
                f"could not record the request in {self.store_key} before sending it, so "
                "nothing was sent (no task was created or billed): try again once the store "
                f"answers ({type(exc).__name__})") from exc
        engine = self._engine
        with engine.lock:
            for row in rows:
                engine.states[row.record.task_id] = TaskState(
                    row.record, row.rev, t0=time.time(), last_age=None)
        return [row.record for row in rows]

    def _void(self, entry: TaskRecord | None) -> None:
        """Erase the entry of a create that was clearly refused (or never
        sent), and void its reservation; should the store fail now, the
        entry stays (visible, and dismissable)."""
        if entry is None:
            return
        try:
            self.store.unreserve([entry.task_id])
        except Exception:  # noqa: BLE001 - the create's outcome is raised or returned
            logger.warning("veo_nb: could not erase the entry %s of a refused create",
                           entry.task_id, exc_info=True)
            return
        engine = self._engine
        with engine.lock:
            engine.states.pop(entry.task_id, None)
            engine.cond.notify_all()
        engine.notify(entry.task)

    def spending(self) -> dict[str, Any]:
        """Today's spending of this store (since local midnight, every process
        counted, from its append-only ledger: removing tasks changes nothing):
        ``tasks`` submitted (creates sent, "may have been billed" ones
        included), the ``amount`` the service reported for them (None when
        none), ``reserved``: what those it reported nothing for yet are
        expected to cost (None: unknown), and the caps (``max_tasks``,
        ``max_amount``; None: none)."""
        spent = self.store.spent_since(_spending.day_start(time.time()))
        return {"tasks": spent.tasks, "amount": spent.amount, "reserved": spent.reserved,
                "max_tasks": self.caps[0], "max_amount": self.caps[1]}

    def _entry(self, prompt: str | None, label: str | None, owner: str | None,
               request: dict[str, Any]) -> TaskRecord:
        """The "may have been billed" entry of a create about to be sent (see
        :mod:`veo_nb._spending`); the real task replaces it."""
        now = time.time()
        return self._tagged(TaskRecord(
            _spending.unconfirmed_id(), label=label, prompt=prompt, model=request.get("model"),
            resolution=request.get("resolution"), aspect_ratio=request.get("aspect_ratio"),
            status=TaskStatus.UNKNOWN, status_text=_spending.UNCONFIRMED,
            error=_spending.unconfirmed_reason(now), first_seen_at=from_unix(now),
            request=request, service=_spending.UNCONFIRMED_SERVICE, owner=owner))

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
        rows = [{**defaults, **row} for row in rows]
        pending: dict[int, TaskRecord] = {}
        if self.caps != (None, None):  # the whole batch reserved first: all of it, or none
            creating = self._creating(rows)
            if creating:
                pending = dict(zip(creating, self._reserve(list(creating.values()))))
        out: list[dict[str, Any]] = []
        try:
            for i, kwargs in enumerate(rows):
                prompt, label = kwargs.pop("prompt", None), kwargs.pop("label", None)
                owner, new = kwargs.pop("owner", None), bool(kwargs.pop("new", False))
                task_id: str | None
                error: str | None
                try:
                    task_id, error = self._submit(prompt, label, owner, new, kwargs,
                                                  pending.pop(i, None)).id, None
                except StoreError as exc:
                    task_id, error = (exc.task_ids[0] if exc.task_ids else None), str(exc)
                except (VeoError, TypeError) as exc:
                    task_id, error = None, str(exc)
                out.append({"prompt": prompt, "label": label, "task_id": task_id,
                            "error": error})
        finally:  # the rows never reached (Ctrl-C): nothing was sent for them
            for entry in pending.values():
                self._void(entry)
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
