"""One poll of one task, and what its answer does to the task (the answer
handlers: an answer, an error, a 404). Run on the engine's worker threads by
:meth:`Polls.run`; every outcome is written to the store before memory shows
it (:meth:`veo_nb._engine.Engine.commit`).

A poll takes the store's claim right before its one request goes out; a poll
refused its claim waits for the claim's end (see :func:`refused_backoff`)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _schedule
from ._engine import NOT_POLLED, TaskState, Write, holder_dead
from ._log import logger
from ._store_sql import POLL_FIELDS
from ._task_state import _GAVE_UP
from .errors import APIError, NotFoundError, RateLimitError, VeoError
from .models import Task, TaskStatus
from .records import (
    LOST_REASON,
    NO_LINK_YET,
    NO_VIDEO_REASON,
    NOT_FOUND_REASON,
    STILL_CHECKING,
    Event,
    TaskRecord,
    from_unix,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._engine import Engine

#: How many more polls, one interval apart, a task answered ``completed``
#: without a video link gets before it is final as "no video" (some gateways
#: add the link a poll later).
NO_LINK_REPOLLS = 3
#: How long a task the service knew keeps being checked after 404s, past its
#: expected window (seconds, on the service's clock).
NOT_FOUND_GRACE_S = 30 * 60
_TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED)
# Within one process: the last contact with the service per (service, task
# id), so that two engines (two stores) never poll a task sooner than the
# interval either. time.monotonic(); inf while a poll is in flight.
_contact_lock = threading.Lock()
_last_contact: dict[tuple[str, str], float] = {}


def refused_backoff(poll_interval: float) -> float:
    """The least time before a process asks again for a claim it was just
    refused (seconds): a quarter of the interval, between 50 ms and 5 s. It
    only matters when the row does not say when the claim ends (another
    machine whose clock runs ahead stamped the contact): otherwise the next
    attempt waits for the claim's end anyway."""
    return min(max(poll_interval / 4, 0.05), 5.0)



class Polls:
    """The polls of one :class:`~veo_nb._engine.Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def run(self, task_id: str) -> Task | None:
        """Poll ``task_id`` once (on a worker thread), whatever goes wrong."""
        return self._engine.guarded(task_id, self._poll, "polling", "due", "polling")

    def _poll(self, task_id: str) -> Task | None:
        settings = self._engine.settings
        client, interval = settings.client, settings.poll_interval
        key = (client.service, task_id)
        mono = time.monotonic()
        with _contact_lock:
            previous = _last_contact.get(key)
            wait = 0.0 if previous is None else previous + interval - mono
            if wait <= 0:
                _last_contact[key] = math.inf
        if wait > 0:  # another store of this process polled it a moment ago
            with self._engine.lock:
                state = self._engine.states.get(task_id)
                if state is not None and state.due is not None:
                    state.due = time.time() + min(wait, interval)
            return None
        reached = False
        try:
            if settings.bucket is not None:
                settings.bucket.acquire()
            # The claim is taken right before the one attempt goes out (the
            # client neither retries nor waits at its 429 gate): a claim's
            # lease covers that request, never a wait or a retry after it.
            sent = time.time()
            with self._engine.lock:
                state = self._engine.states.get(task_id)
                holder = None if state is None else state.poller
            row = self._engine.store.claim_poll(task_id, self._engine.me, now=sent, interval=interval,
                                        until=sent + settings.claim_s,
                                        orphan=holder if holder_dead(holder) else None)
            if row is None:  # another process polls it, or did so a moment ago
                self._claim_refused(task_id)
                return None
            reached = True
            try:
                task = client.get_result(task_id, retry=False)
            except APIError as exc:
                reached = exc.reached
                raise
        except NotFoundError as exc:
            return self._on_not_found(task_id, exc)
        except RateLimitError as exc:
            retry_after = (None if exc.retry_after is None else
                           min(exc.retry_after, self._engine.gate_cap_s))
            wait_s = max(retry_after or interval, interval if exc.reached else 0.0)
            if exc.reached:
                self._share_gate(retry_after)
            return self._on_poll_error(task_id, exc, wait_s, reached=exc.reached)
        except VeoError as exc:
            return self._on_poll_error(task_id, exc, None, reached=reached)
        finally:
            with _contact_lock:
                if reached:
                    _last_contact[key] = time.monotonic()
                elif previous is None:
                    _last_contact.pop(key, None)
                else:
                    _last_contact[key] = previous
        return self._on_answer(task_id, task)

    def _claim_refused(self, task_id: str) -> None:
        """Another process holds the task's claim, or polled it less than one
        interval ago (its claim changes no revision, so memory may not know
        yet): read its row and look again when that claim runs out, never
        sooner than :func:`refused_backoff` from now. (Without this, the
        worker would hand the job straight back to the dispatcher: a write
        transaction on the shared store per turn, a core spent.)"""
        row = self._engine.store.row(task_id)
        now = time.time()
        with self._engine.lock:
            state = self._engine.states.get(task_id)
            if state is None:
                return
            task = None if row is None else self._engine.apply_row(row, now, force=True)
            if state.pending is None:
                self._engine.reschedule(state, now)
                if state.due is not None:
                    state.due = max(state.due, now + refused_backoff(self._engine.settings.poll_interval))
        if task is not None:
            self._engine.notify(task)

    def _share_gate(self, retry_after: float | None) -> None:
        if retry_after is None:
            return
        until = time.time() + retry_after
        with self._engine.lock:
            self._engine.gate_until = max(self._engine.gate_until, until)
        try:
            self._engine.store.limit_rate(self._engine.client.service, until,
                                          horizon=self._engine.gate_cap_s)
        except Exception:  # noqa: BLE001 - the client's own gate still holds
            logger.debug("veo_nb: could not share the rate limit", exc_info=True)

    def _claim(self, due: float | None, contact: float) -> dict[str, Any]:
        """The claim columns written with a poll's outcome: the contact, and
        our claim until the next due time plus the grace."""
        until = None if due is None else due + self._engine.settings.grace
        return {"contact_at": contact, "poller": self._engine.me if until else None, "poll_until": until}

    def _on_answer(self, task_id: str, task: Task) -> Task | None:
        """Record one poll's answer; return the task if its status changed."""
        now = time.time()
        stamp = from_unix(now)
        with self._engine.lock:
            state = self._engine.states.get(task_id)
            if state is None:
                return None
            rec = state.record
            previous_age = state.last_age
            age = now - state.t0
            status, error, text = task.status, task.error, task.status_text
            events: list[Event] = []
            linkless = 0
            if status is TaskStatus.COMPLETED and not task.video_url:
                if state.linkless < NO_LINK_REPOLLS:  # the link may come a poll later
                    linkless = state.linkless + 1
                    status, text = TaskStatus.PROCESSING, TaskStatus.PROCESSING.value
                    error = f"{NO_LINK_YET} ({linkless}/{NO_LINK_REPOLLS})"
                    events.append(Event(task_id, "note", task.status_text, observed_at=stamp,
                                        detail=error))
                else:
                    status, error = TaskStatus.FAILED, NO_VIDEO_REASON
            changed = text != rec.status_text or status is not rec.status
            if changed:
                events.append(Event(task_id, "status", text if linkless else task.status_text,
                                    observed_at=stamp,
                                    detail=NO_VIDEO_REASON if error == NO_VIDEO_REASON else error))
            new = replace(
                rec,
                status=status,
                status_text=status.value if error == NO_VIDEO_REASON else text,
                model=task.model or rec.model,
                created_at=task.created or rec.created_at,
                video_url=task.video_url,
                error=error,
                raw=dict(task.raw),
                poll_count=rec.poll_count + 1,
                last_polled_at=stamp,
                started_at=rec.started_at or (
                    stamp if status in (TaskStatus.PROCESSING, *_TERMINAL) else None),
                service=rec.service or self._engine.client.service,
            )
            fields = (*POLL_FIELDS, "service")
            claim = self._claim(None, now)
            due: float | None = None
            learned: tuple[tuple[str | None, str | None], float] | None = None
            if status.is_terminal:
                new = replace(new, finished_at=rec.finished_at or stamp)
                if status is TaskStatus.COMPLETED:
                    # The link's 24 h started at the finish, somewhere after
                    # the previous contact: count from there (never too late).
                    finished_after = state.t0 + (previous_age if previous_age is not None else age)
                    new = replace(new, url_expires_at=from_unix(
                        finished_after + self._engine.settings.url_lifetime))
                    if previous_age is not None:
                        learned = ((new.model, new.mode), previous_age)
                    if self._engine.settings.download and rec.download_state == "none":
                        new = replace(new, download_state="pending")
                        fields = (*fields, "download_state")
                        events.append(Event(task_id, "download", task.status_text,
                                            observed_at=stamp, detail="pending"))
                        # who saw it finish downloads it: the others see the claim
                        # with the completion, and do not race for the video
                        claim.update(downloader=self._engine.me,
                                     download_until=now + self._engine.downloads.claim_s)
            elif linkless:  # asked again one interval later, as the 30 s rule allows
                due = now + self._engine.settings.poll_interval
            else:
                probe = replace(state, last_age=age)
                due = self._engine.next_due(probe)
                if due is None:
                    new, gave_up = self._give_up(new, age, stamp)
                    events.append(gave_up)
            new = replace(new, next_poll_at=from_unix(due))
            if due is not None:
                claim = self._claim(due, now)

        def saved(st: TaskState) -> None:
            st.errors = 0
            st.linkless = linkless
            st.not_found_since = None
            st.last_age = age
            st.due = due
            if learned is not None:
                self._engine.observed.setdefault(learned[0], []).append(learned[1])
            self._engine.downloads.schedule(st, time.time())

        # a cleared "not found (since...), still checking" is worth showing too
        shown = changed or (rec.error or None) != (new.error or None)
        self._engine.commit(task_id, Write(new, events, fields, claim, saved, shown))
        return new.task if changed else None

    def _give_up(self, rec: TaskRecord, age: float, stamp: datetime) -> tuple[TaskRecord, Event]:
        message = (f"{_GAVE_UP} after {age:.0f} s without a final status "
                   "(the task may still finish: track() it again to resume)")
        logger.warning("veo_nb: %s: %s", rec.task_id, message)
        return replace(rec, error=message), Event(rec.task_id, "gave_up", rec.status_text,
                                                  observed_at=stamp, detail=message)

    def _on_poll_error(self, task_id: str, exc: VeoError, delay: float | None, *,
                       reached: bool) -> Task | None:
        now = time.time()
        stamp = from_unix(now)
        with self._engine.lock:
            state = self._engine.states.get(task_id)
            if state is None:
                return None
            errors = state.errors + 1
            if delay is None:
                delay = _schedule.error_backoff(errors, self._engine.settings.poll_interval)
            rec = state.record
            events = [Event(task_id, "poll_error", rec.status_text, observed_at=stamp,
                            http_status=getattr(exc, "status_code", None),
                            attempt=errors, detail=str(exc))]
            due: float | None = now + delay
            if now - state.t0 >= state.deadline:
                due = None
                rec, gave_up = self._give_up(rec, now - state.t0, stamp)
                events.append(gave_up)
            new = replace(rec, next_poll_at=from_unix(due))
            if reached:
                new = replace(new, last_polled_at=stamp)
            contact = now if reached else (state.contact_at or 0.0)

        def saved(st: TaskState) -> None:
            st.errors = errors
            st.due = due
            if reached:
                st.last_age = now - st.t0

        fields = ("next_poll_at", "error", "last_polled_at")
        self._engine.commit(task_id, Write(new, events, fields, self._claim(due, contact), saved,
                                   notify=False))
        logger.warning("veo_nb: polling %s failed (attempt %d): %s", task_id, errors, exc)
        return None

    def _on_not_found(self, task_id: str, exc: NotFoundError) -> Task | None:
        """A 404. For an id the service never answered and this store did not
        create (a typo), the end: "not found". For a task it knew (it
        answered before, or this store created it), a gateway may answer 404
        for a while: keep checking with backoff, shown as "not found (since
        HH:MM), still checking", until the end of its expected window plus
        :data:`NOT_FOUND_GRACE_S`; then fail it saying what happened."""
        stamp_s = time.time()
        stamp = from_unix(stamp_s)
        service = self._engine.client.service
        with self._engine.lock:
            state = self._engine.states.get(task_id)
            if state is None:
                return None
            rec = state.record
            poll_error = Event(task_id, "poll_error", None, observed_at=stamp, http_status=404,
                               attempt=state.errors + 1, detail=str(exc))
            due: float | None = None
            errors = state.errors
            since = state.not_found_since
            known = bool(rec.request) or (rec.poll_count > 0 and rec.status_text != NOT_POLLED
                                          and not rec.is_terminal)
            if rec.service is None and rec.poll_count:
                # A task of a store written before services were recorded, that
                # some service answered before: it may belong to another one.
                # A 404 from this service must not finish it.
                message = (f"not known to {service} (404); it may belong to another service: "
                           "left as it was")
                new = replace(rec, error=message, next_poll_at=None, last_polled_at=stamp)
                events = [poll_error, Event(task_id, "note", rec.status_text, observed_at=stamp,
                                            detail=message)]
                fields: tuple[str, ...] = ("error", "next_poll_at", "last_polled_at")
            else:
                if known:  # a gateway may answer 404 for a while: check until this
                    since = stamp_s if since is None else since
                    until = (max(state.t0 + self._engine.window(rec)[1], since)
                             + NOT_FOUND_GRACE_S * self._engine.client.time_scale)
                    shown_since = from_unix(since).strftime("%H:%M UTC")
                if known and stamp_s < until:
                    errors += 1
                    due = min(stamp_s + _schedule.error_backoff(errors, self._engine.settings.poll_interval),
                              max(until, stamp_s + self._engine.settings.poll_interval))
                    message = f"{STILL_CHECKING}{shown_since}), still checking"
                    events = [poll_error]
                    if state.not_found_since is None:
                        events.append(Event(task_id, "note", rec.status_text, observed_at=stamp,
                                            detail=f"{message}: the service knew this task"))
                    new = replace(rec, error=message, next_poll_at=from_unix(due),
                                  last_polled_at=stamp, poll_count=rec.poll_count + 1)
                    fields = ("error", "next_poll_at", "last_polled_at", "poll_count")
                else:  # a typo, or a task the service lost
                    message = NOT_FOUND_REASON if not known else (
                        f"{LOST_REASON}{shown_since}, though the service knew this task "
                        "before: it may have been lost on the service (ask the provider "
                        "about this id); track() it to check again")
                    new = replace(rec, status=TaskStatus.FAILED,
                                  status_text=TaskStatus.FAILED.value, error=message,
                                  finished_at=stamp, next_poll_at=None,
                                  poll_count=rec.poll_count + 1, last_polled_at=stamp,
                                  service=rec.service or service)
                    events = [poll_error, Event(task_id, "status", "failed", observed_at=stamp,
                                                detail=message)]
                    fields = (*POLL_FIELDS, "service")

        def saved(st: TaskState) -> None:
            st.due = due
            st.errors = errors
            st.last_age = stamp_s - st.t0
            st.not_found_since = since if due is not None else None

        self._engine.commit(task_id, Write(new, events, fields, self._claim(due, stamp_s), saved))
        return new.task
