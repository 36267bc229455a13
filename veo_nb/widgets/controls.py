"""The panel's forms: submit a prompt, track pasted ids, remove and archive,
export; and the two guards every button goes through.

Each form calls the tracker and reports the outcome through ``report(text,
ok)``; errors (a :class:`~veo_nb.ValidationError`, an HTTP error, a missing
pyarrow) become a message, never a traceback in the notebook. A form
refuses what it cannot do before anything is sent: a create request is
billed on the real service.

* :class:`Clicks` runs a button's action once per click and ignores the
  clicks that arrive while it runs or just after (the second click of a
  double click is queued in the kernel behind the first, so disabling the
  button alone does not stop it).
* :class:`ConfirmBar` asks before anything that cannot be undone (clearing
  finished tasks, deleting from the store, overwriting a file or a notebook
  variable): a question and a second button, no browser dialog.
"""

from __future__ import annotations

import builtins
import keyword
import re
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .._i18n import N_, _
from .._log import logger
from .._spec import ASPECT_RATIOS, DEFAULT_MODEL, MAX_REFERENCE_IMAGES, MODELS, Mode
from .._tables import esc, word
from .._urls import is_http_url
from ..errors import ValidationError, VeoError
from ..records import EXPORT_SUFFIXES, TaskRecord
from .format import is_not_found
from .tree import close_tree

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

Report = Callable[[str, bool], None]
#: What the mode dropdown calls each mode (shown translated).
MODE_LABELS: dict[Mode, str] = {
    Mode.TEXT: N_("text only"),
    Mode.REFERENCE: N_("reference images"),
    Mode.FIRST_LAST: N_("first/last frame"),
}
#: What the export switch calls each frame (shown translated).
EXPORT_LABELS: dict[str, str] = {"tasks": N_("tasks"), "history": N_("history"),
                                 "summary": N_("summary")}
#: What can be exported (``tracker.export(path, what=...)``).
EXPORTS: tuple[str, ...] = ("tasks", "history", "summary")
#: Clicks on a button this soon after its action ended are ignored.
SETTLE_S = 0.5
_SPLIT_IDS = re.compile(r"[\s,;]+")
_SPLIT_URLS = re.compile(r"[\s,]+")


def _split(text: str, pattern: re.Pattern[str]) -> list[str]:
    return list(dict.fromkeys(part for part in pattern.split(text) if part))


def split_ids(text: str) -> list[str]:
    """Task ids in pasted text (separated by whitespace, commas or semicolons),
    in order, without duplicates."""
    return _split(text, _SPLIT_IDS)


def split_urls(text: str) -> list[str]:
    """URLs in pasted text (separated by commas, spaces or new lines), in
    order, without duplicates."""
    return _split(text, _SPLIT_URLS)


def _fail(report: Report, action: str, exc: Exception) -> None:
    if not isinstance(exc, (VeoError, OSError, KeyError)):
        logger.exception("veo_nb panel: %s failed", action)
    report(_("{action} failed: {error}").format(action=_(action), error=exc), False)


class Clicks:
    """Binds buttons to actions so that a double click acts once: while an
    action runs its button is disabled, and clicks arriving before
    :data:`SETTLE_S` seconds after it ended are ignored. ``serialize``: a
    lock held while an action runs (the panel's, so that actions and
    refreshes never interleave)."""

    def __init__(self, serialize: threading.RLock | None = None) -> None:
        self._lock = threading.Lock()
        self._serialize = serialize
        self._busy: set[int] = set()
        self._ended: dict[int, float] = {}

    def bind(self, button: widgets.Button, action: Callable[[], Any], *,
             disable: bool = True) -> None:
        """Run ``action`` on ``button``'s clicks; ``disable``: grey the button
        out while it runs (not for buttons whose state says it, like Play)."""
        button.on_click(lambda b: self.run(b, action, disable=disable))

    def run(self, button: widgets.Button, action: Callable[[], Any], *,
            disable: bool = True) -> bool:
        """Run ``action`` for one click of ``button``; False when the click was ignored."""
        key = id(button)
        with self._lock:
            if key in self._busy or time.monotonic() - self._ended.get(key, -SETTLE_S) < SETTLE_S:
                return False
            self._busy.add(key)
        was = button.disabled
        if disable:
            button.disabled = True
        try:
            if self._serialize is None:
                action()
            else:
                with self._serialize:
                    action()
        finally:
            if disable:
                button.disabled = was
            with self._lock:
                self._busy.discard(key)
                self._ended[key] = time.monotonic()
        return True


class ConfirmBar:
    """A hidden line that asks a question with a "yes" button and Cancel."""

    def __init__(self, clicks: Clicks, report: Report) -> None:
        self._report = report
        self._action: Callable[[], Any] | None = None
        self.question = widgets.HTML()
        self.yes = widgets.Button(button_style="danger", _dom_classes=("veo-confirm",),
                                  layout=widgets.Layout(width="auto"))
        self.no = widgets.Button(description=_("Cancel"), layout=widgets.Layout(width="auto"))
        clicks.bind(self.yes, self._confirmed)
        clicks.bind(self.no, self.cancel)
        self.widget = widgets.HBox([self.question, self.yes, self.no],
                                   layout=widgets.Layout(display="none", align_items="center",
                                                         flex_flow="row wrap"))

    @property
    def pending(self) -> bool:
        """True while a question waits for an answer."""
        return self._action is not None

    def ask(self, question_html: str, yes: str, action: Callable[[], Any]) -> None:
        """Show ``question_html`` (already escaped) and run ``action`` on "yes"."""
        self._action = action
        self.question.value = question_html
        self.yes.description = yes
        self.widget.layout.display = ""

    def cancel(self) -> None:
        """Hide the question without acting."""
        if self._action is not None:
            self._report(_("cancelled"), True)
        self._hide()

    def _hide(self) -> None:
        self._action = None
        self.widget.layout.display = "none"

    def _confirmed(self) -> None:
        action = self._action
        self._hide()
        if action is not None:
            action()


class SubmitForm:
    """Prompt, label, model, resolution, aspect ratio and mode, offering only
    the combinations the model capability table allows; image URL inputs
    appear for the image modes, and each mode requires its inputs."""

    def __init__(self, tracker: Tracker, report: Report, submitted: Callable[[str], None],
                 clicks: Clicks) -> None:
        self._tracker, self._report, self._submitted = tracker, report, submitted
        # Every input has a description or a tooltip: a name for screen readers.
        self.prompt = widgets.Textarea(placeholder=_("Describe the video…"),
                                       tooltip=_("prompt"),
                                       layout=widgets.Layout(width="100%", height="64px"))
        self.label = widgets.Text(placeholder=_("label (optional)"), tooltip=_("label"),
                                  layout=widgets.Layout(width="200px"))
        self.model = widgets.Dropdown(options=list(MODELS), value=DEFAULT_MODEL,
                                      description=_("model"), layout=widgets.Layout(width="260px"))
        self.resolution = widgets.Dropdown(description=_("resolution"),
                                           layout=widgets.Layout(width="190px"))
        self.aspect_ratio = widgets.Dropdown(options=list(ASPECT_RATIOS), value=ASPECT_RATIOS[0],
                                             description=_("aspect"),
                                             layout=widgets.Layout(width="170px"))
        self.mode = widgets.Dropdown(description=_("mode"), layout=widgets.Layout(width="240px"))
        self.reference_images = widgets.Textarea(
            placeholder=_("1 to {n} reference image URLs (separated by commas, spaces or new "
                          "lines)").format(n=MAX_REFERENCE_IMAGES),
            layout=widgets.Layout(width="100%", height="56px"))
        self.first_image = widgets.Text(placeholder=_("first frame image URL (required)"),
                                        layout=widgets.Layout(width="50%"))
        self.last_image = widgets.Text(placeholder=_("last frame image URL (optional)"),
                                       layout=widgets.Layout(width="50%"))
        # Local image files, when the client has an uploader to give them URLs.
        self.files: widgets.FileUpload | None = None
        if getattr(tracker.client, "uploader", None) is not None:
            self.files = widgets.FileUpload(
                accept="image/*", multiple=True, description=_("image files"),
                tooltip=_("images from this computer: uploaded with the client's uploader"))
        self.images = widgets.HBox(layout=widgets.Layout(width="100%", flex_flow="row wrap"))
        self.button = widgets.Button(description=_("Submit"), button_style="primary",
                                     icon="paper-plane", _dom_classes=("veo-submit",))
        self._sync_model()
        self.model.observe(lambda _: self._sync_model(), names="value")
        self.mode.observe(lambda _: self._sync_images(), names="value")
        clicks.bind(self.button, self.submit)
        self.widget = widgets.VBox([
            self.prompt,
            widgets.HBox([self.model, self.resolution, self.aspect_ratio, self.mode],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.images,
            widgets.HBox([self.label, self.button], layout=widgets.Layout(flex_flow="row wrap")),
        ])

    def _sync_model(self) -> None:
        """Offer the chosen model's resolutions and modes, keeping the current
        choice when it is still valid."""
        spec = MODELS[self.model.value]
        resolution = self.resolution.value
        self.resolution.options = list(spec.resolutions)
        self.resolution.value = resolution if resolution in spec.resolutions else spec.resolutions[0]
        modes = [(_(MODE_LABELS[m]), m.value) for m in Mode if spec.supports(m)]
        mode = self.mode.value
        self.mode.options = modes
        self.mode.value = mode if mode in [v for _, v in modes] else Mode.TEXT.value
        self._sync_images()

    def _sync_images(self) -> None:
        wanted: tuple[widgets.Widget, ...] = {
            Mode.REFERENCE.value: (self.reference_images,),
            Mode.FIRST_LAST.value: (self.first_image, self.last_image),
        }.get(self.mode.value, ())
        if wanted and self.files is not None:
            wanted = (*wanted, self.files)
        if self.images.children != wanted:
            self.images.children = wanted

    def request(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Tracker.submit` the form describes.
        Raises :class:`~veo_nb.ValidationError` when the mode's inputs are missing."""
        kwargs: dict[str, Any] = {
            "model": self.model.value,
            "resolution": self.resolution.value,
            "aspect_ratio": self.aspect_ratio.value,
        }
        files = [bytes(f["content"]) for f in (self.files.value if self.files else ())]
        if self.mode.value == Mode.REFERENCE.value:
            urls = split_urls(self.reference_images.value)
            images: list[Any] = [*urls, *files]
            kinds = "image URLs" if self.files is None else "images (URLs or files)"
            if not 1 <= len(images) <= MAX_REFERENCE_IMAGES:
                raise ValidationError(f"reference images mode needs 1 to {MAX_REFERENCE_IMAGES} "
                                      f"{kinds}, got {len(images)}")
            kwargs["reference_images"] = images
        elif self.mode.value == Mode.FIRST_LAST.value:
            frames: list[Any] = [u for u in (self.first_image.value.strip(),
                                             self.last_image.value.strip()) if u]
            frames += files
            if not frames:
                raise ValidationError("first/last frame mode needs a first-frame image URL"
                                      + ("" if self.files is None else " or file"))
            if len(frames) > 2:
                raise ValidationError("first/last frame mode takes two images at most (the "
                                      f"first and the last frame), got {len(frames)}")
            kwargs["first_image"] = frames[0]
            kwargs["last_image"] = frames[1] if len(frames) > 1 else None
        for url in [*kwargs.get("reference_images", ()), kwargs.get("first_image"),
                    kwargs.get("last_image")]:
            if isinstance(url, str) and not is_http_url(url):
                raise ValidationError(f"not an http(s) image URL: {url!r}")
        return kwargs

    def submit(self) -> None:
        """Submit the form's prompt (what the Submit button does)."""
        if not self.prompt.value.strip():
            self._report(_("type a prompt first"), False)
            return
        try:
            task = self._tracker.submit(self.prompt.value, new=True,
                                        label=self.label.value.strip() or None,
                                        **self.request())
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never a traceback
            _fail(self._report, N_("submit"), exc)
            return
        self.prompt.value = ""
        self.label.value = ""
        if self.files is not None:
            self.files.value = ()
        self._report(_("submitted {id} ({status})").format(id=task.id, status=word(task.status_text)),
                     True)
        self._submitted(task.id)

    def close(self) -> None:
        """Close the form, the image inputs of every mode included."""
        for part in (self.widget, self.reference_images, self.first_image, self.last_image,
                     self.files):
            if part is not None:
                close_tree(part)


class TrackForm:
    """A box to paste task ids created elsewhere, and a Track button."""

    def __init__(self, tracker: Tracker, report: Report, tracked: Callable[[str], None],
                 clicks: Clicks) -> None:
        self._tracker, self._report, self._tracked = tracker, report, tracked
        self.ids = widgets.Textarea(
            placeholder=_("paste task ids (separated by spaces, commas or new lines)"),
            layout=widgets.Layout(width="100%", height="56px"))
        self.button = widgets.Button(description=_("Track"), icon="plus")
        clicks.bind(self.button, self.track)
        self.widget = widgets.VBox([self.ids, self.button])

    def track(self) -> None:
        """Track the pasted ids (what the Track button does)."""
        ids = split_ids(self.ids.value)
        if not ids:
            self._report(_("paste one or more task ids first"), False)
            return
        try:
            tasks = self._tracker.track_many(ids)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never a traceback
            _fail(self._report, N_("track"), exc)
            return
        self.ids.value = ""
        failed = sum(1 for t in tasks if t.error)
        note = _("; {n} with an error (see their rows)").format(n=failed) if failed else ""
        self._report(_("tracking {n} task(s)").format(n=len(tasks)) + note, True)
        self._tracked(tasks[-1].id)

    def close(self) -> None:
        """Close the form's widgets."""
        close_tree(self.widget)


class ManageBar:
    """Remove tasks from the view (``tracker.remove``): a task's ✕ button,
    "clear finished" (asks first) and "dismiss not found" (ids the service
    answered 404 for, erased at once: there is nothing to keep).
    ``delete`` also erases removed tasks from the store (asks first)."""

    def __init__(self, tracker: Tracker, report: Report, confirm: ConfirmBar, clicks: Clicks,
                 changed: Callable[[], None]) -> None:
        self._tracker, self._report, self._confirm, self._changed = tracker, report, confirm, changed
        self.delete = widgets.Checkbox(value=False, indent=False,
                                       description=_("also erase removed tasks from the history file"))
        self.clear = widgets.Button(description=_("Clear finished…"), icon="archive",
                                    tooltip=_("remove completed and failed tasks from the view"),
                                    _dom_classes=("veo-clear",))
        self.dismiss = widgets.Button(description=_("Dismiss not found"), icon="times",
                                      layout=widgets.Layout(display="none", width="auto"),
                                      _dom_classes=("veo-dismiss",))
        clicks.bind(self.clear, self.clear_finished)
        clicks.bind(self.dismiss, self.dismiss_not_found)
        self.widget = widgets.VBox([widgets.HBox([self.clear]), self.delete])

    def _remove(self, ids: list[str], delete: bool, what: str, left: int = 0) -> None:
        try:
            n = self._tracker.remove(ids, delete=delete)
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            _fail(self._report, N_("remove"), exc)
            return
        where = ("and erased them from the history" if delete else
                 "(still in the history: track their ids to bring them back)")
        others = f"; {left} of classmates' left as they are" if left else ""
        mine = f"{n} of yours" if left else str(n)
        self._report(f"removed {mine} {what} from the view {where}{others}", True)
        self._changed()

    def _split(self, records: list[TaskRecord]) -> tuple[list[str], int]:
        """The ids this session may remove, and how many others' it may not."""
        mine = [r.task_id for r in records if self._tracker.may_change(r)]
        return mine, len(records) - len(mine)

    def remove_one(self, task_id: str) -> None:
        """What a row's ✕ does (asks first when ``delete`` is ticked)."""
        if self.delete.value:
            self._confirm.ask(f"Erase task <code>{esc(task_id)}</code> from the history file?",
                              "Erase", lambda: self._remove([task_id], True, "task"))
        else:
            self._remove([task_id], False, "task")

    def clear_finished(self) -> None:
        """Ask, then remove every completed and failed task from the view."""
        ids, left = self._split([r for r in self._tracker.records()
                                 if r.is_terminal and not is_not_found(r)])
        if not ids:
            self._report("no finished task of yours to clear" if left else
                         "no finished task to clear", True)
            return
        delete = self.delete.value
        verb = "Remove and erase" if delete else "Remove"
        whose = f" of yours ({left} of classmates' stay)" if left else ""
        where = (" and erase them from the history, for every user of it" if delete else
                 " (they stay in the history: tasks() and other users still see them)")
        self._confirm.ask(f"{verb} {len(ids)} finished task(s){whose} (completed and failed) "
                          f"from the view{where}?",
                          verb, lambda: self._remove(ids, delete, "finished task(s)", left))

    def not_found(self, n: int) -> None:
        """Show the dismiss button for the ``n`` tasks the service does not
        know (hidden when there are none)."""
        self.dismiss.description = (_("Dismiss {n} not found").format(n=n) if n
                                    else _("Dismiss not found"))
        self.dismiss.layout.display = "" if n else "none"

    def dismiss_not_found(self) -> None:
        """Remove and erase every task the service answered 404 for."""
        ids, left = self._split([r for r in self._tracker.records() if is_not_found(r)])
        if ids:
            self._remove(ids, True, "unknown id(s)", left)

    def close(self) -> None:
        """Close the bar's widgets (the dismiss button lives in the toolbar)."""
        close_tree(self.widget)
        close_tree(self.dismiss)


class ExportBar:
    """The tasks, history or summary DataFrame into a notebook variable, or
    to a ``.csv`` / ``.parquet`` / ``.json`` file; asks before replacing a
    notebook name, a builtin, or an existing file."""

    def __init__(self, tracker: Tracker, report: Report, confirm: ConfirmBar,
                 clicks: Clicks) -> None:
        self._tracker, self._report, self._confirm = tracker, report, confirm
        self._written: dict[str, weakref.ref[Any]] = {}
        self.what = widgets.ToggleButtons(options=[(_(EXPORT_LABELS[e]), e) for e in EXPORTS],
                                          value="tasks", style={"button_width": "80px"})
        self.name = widgets.Text(value="veo_tasks", description=_("variable"),
                                 layout=widgets.Layout(width="240px"))
        self.to_variable = widgets.Button(description=_("To variable"), icon="table")
        self.path = widgets.Text(value="veo_nb_tasks.csv", description=_("file"),
                                 layout=widgets.Layout(width="320px"))
        self.to_file = widgets.Button(description=_("Write file"), icon="download")
        self.what.observe(self._what_changed, names="value")
        clicks.bind(self.to_variable, self.export_variable)
        clicks.bind(self.to_file, self.export_file)
        self.widget = widgets.VBox([
            self.what,
            widgets.HBox([self.name, self.to_variable], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.path, self.to_file], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HTML(f"<small>{esc(_('file types: {types}').format(types=', '.join(EXPORT_SUFFIXES)))}</small>"),
        ])

    def _what_changed(self, change: dict[str, Any]) -> None:
        old, new = change["old"], change["new"]
        if self.name.value == f"veo_{old}":
            self.name.value = f"veo_{new}"
        path = Path(self.path.value)
        if path.stem == f"veo_nb_{old}":
            self.path.value = str(path.with_name(f"veo_nb_{new}{path.suffix}"))

    def _frame(self) -> Any:
        frames: dict[str, Callable[[], Any]] = {
            "tasks": self._tracker.tasks, "history": self._tracker.history,
            "summary": self._tracker.summary}
        return frames[self.what.value]()

    def export_variable(self) -> None:
        """Set the variable named in the form to ``tracker.tasks()`` (or
        ``history()``, ``summary()``) in the notebook's namespace (needs IPython)."""
        from IPython import get_ipython

        name = self.name.value.strip()
        if not name.isidentifier() or keyword.iskeyword(name):
            self._report(_("{name} is not a valid Python variable name").format(name=repr(name)),
                         False)
            return
        shell = get_ipython()
        if shell is None:
            self._report(_("exporting to a variable needs IPython (a notebook or IPython shell); "
                           "use tracker.{what}() instead").format(what=self.what.value), False)
            return
        namespace = shell.user_ns
        ours = self._written.get(name)
        existing = namespace.get(name, None)
        if name in namespace and not (ours is not None and ours() is existing):
            self._confirm.ask(esc(_("{name} already exists in the notebook: replace it?")).format(
                                  name=f"<code>{esc(name)}</code>"),
                              _("Replace {name}").format(name=name),
                              lambda: self._set_variable(namespace, name))
        elif hasattr(builtins, name):
            self._confirm.ask(esc(_("{name} is a Python builtin: shadow it?")).format(
                                  name=f"<code>{esc(name)}</code>"),
                              _("Shadow {name}").format(name=name),
                              lambda: self._set_variable(namespace, name))
        else:
            self._set_variable(namespace, name)

    def _set_variable(self, namespace: dict[str, Any], name: str) -> None:
        try:
            frame = self._frame()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            _fail(self._report, N_("export"), exc)
            return
        namespace[name] = frame
        self._written[name] = weakref.ref(frame)
        self._report(_("{name} = tracker.{what}() ({n} rows)").format(
            name=name, what=self.what.value, n=len(frame)), True)

    def export_file(self) -> None:
        """Write the chosen frame to the form's path; the suffix must be one of
        :data:`~veo_nb.records.EXPORT_SUFFIXES`; asks before overwriting."""
        text = self.path.value.strip()
        if not text:
            self._report(_("type a file name first"), False)
            return
        path = Path(text)
        if path.suffix.lower() not in EXPORT_SUFFIXES:
            got = (_("{suffix} files are not supported").format(suffix=path.suffix) if path.suffix
                   else _("the file name has no type"))
            self._report(_("{problem}: end the name with one of {suffixes}").format(
                problem=got, suffixes=", ".join(EXPORT_SUFFIXES)), False)
            return
        if path.exists():
            self._confirm.ask(esc(_("{name} exists: overwrite it?")).format(
                                  name=f"<code>{esc(text)}</code>"), _("Overwrite"),
                              lambda: self._write(path))
        else:
            self._write(path)

    def _write(self, path: Path) -> None:
        try:
            written = self._tracker.export(path, what=self.what.value)
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            _fail(self._report, N_("export"), exc)
            return
        self._report(_("wrote {path}").format(path=written), True)

    def close(self) -> None:
        """Close the bar's widgets."""
        close_tree(self.widget)
