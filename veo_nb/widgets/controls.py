"""The panel's forms: submit a prompt, track pasted ids, export the tasks.

Each form calls the tracker and reports the outcome through ``report(text,
ok)``; errors (a :class:`~veo_nb.ValidationError`, an HTTP error, a missing
pyarrow) become a message, never a traceback in the notebook.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .._log import logger
from .._spec import ASPECT_RATIOS, DEFAULT_MODEL, MAX_REFERENCE_IMAGES, MODELS, Mode
from ..errors import VeoError

if TYPE_CHECKING:  # pragma: no cover
    from ..tracker import Tracker

Report = Callable[[str, bool], None]
#: What the mode dropdown calls each mode.
MODE_LABELS: dict[Mode, str] = {
    Mode.TEXT: "text only",
    Mode.REFERENCE: "reference images",
    Mode.FIRST_LAST: "first/last frame",
}
_SPLIT_IDS = re.compile(r"[\s,;]+")


def split_ids(text: str) -> list[str]:
    """Task ids in pasted text (separated by whitespace, commas or semicolons),
    in order, without duplicates."""
    return list(dict.fromkeys(part for part in _SPLIT_IDS.split(text) if part))


def _fail(report: Report, action: str, exc: Exception) -> None:
    if not isinstance(exc, (VeoError, OSError)):
        logger.exception("veo_nb panel: %s failed", action)
    report(f"{action} failed: {exc}", False)


class SubmitForm:
    """Prompt, label, model, resolution, aspect ratio and mode, offering only
    the combinations the model capability table allows; image URL inputs
    appear for the image modes."""

    def __init__(self, tracker: Tracker, report: Report,
                 submitted: Callable[[str], None]) -> None:
        self._tracker, self._report, self._submitted = tracker, report, submitted
        self.prompt = widgets.Textarea(placeholder="Describe the video…",
                                       layout=widgets.Layout(width="100%", height="64px"))
        self.label = widgets.Text(placeholder="label (optional)",
                                  layout=widgets.Layout(width="160px"))
        self.model = widgets.Dropdown(options=list(MODELS), value=DEFAULT_MODEL,
                                      description="model", layout=widgets.Layout(width="260px"))
        self.resolution = widgets.Dropdown(description="resolution",
                                           layout=widgets.Layout(width="190px"))
        self.aspect_ratio = widgets.Dropdown(options=list(ASPECT_RATIOS), value=ASPECT_RATIOS[0],
                                             description="aspect", layout=widgets.Layout(width="170px"))
        self.mode = widgets.Dropdown(description="mode", layout=widgets.Layout(width="240px"))
        self.reference_images = widgets.Textarea(
            placeholder=f"reference image URLs, one per line (up to {MAX_REFERENCE_IMAGES})",
            layout=widgets.Layout(width="100%", height="56px"))
        self.first_image = widgets.Text(placeholder="first frame image URL",
                                        layout=widgets.Layout(width="50%"))
        self.last_image = widgets.Text(placeholder="last frame image URL (optional)",
                                       layout=widgets.Layout(width="50%"))
        self.images = widgets.HBox(layout=widgets.Layout(width="100%"))
        self.button = widgets.Button(description="Submit", button_style="primary",
                                     icon="paper-plane")
        self._sync_model()
        self.model.observe(lambda _: self._sync_model(), names="value")
        self.mode.observe(lambda _: self._sync_images(), names="value")
        self.button.on_click(lambda _: self.submit())
        self.widget = widgets.VBox([
            self.prompt,
            widgets.HBox([self.model, self.resolution, self.aspect_ratio, self.mode],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.images,
            widgets.HBox([self.label, self.button]),
        ])

    def _sync_model(self) -> None:
        """Offer the chosen model's resolutions and modes, keeping the current
        choice when it is still valid."""
        spec = MODELS[self.model.value]
        resolution = self.resolution.value
        self.resolution.options = list(spec.resolutions)
        self.resolution.value = resolution if resolution in spec.resolutions else spec.resolutions[0]
        modes = [(MODE_LABELS[m], m.value) for m in Mode if spec.supports(m)]
        mode = self.mode.value
        self.mode.options = modes
        self.mode.value = mode if mode in [v for _, v in modes] else Mode.TEXT.value
        self._sync_images()

    def _sync_images(self) -> None:
        wanted: tuple[widgets.Widget, ...] = {
            Mode.REFERENCE.value: (self.reference_images,),
            Mode.FIRST_LAST.value: (self.first_image, self.last_image),
        }.get(self.mode.value, ())
        if self.images.children != wanted:
            self.images.children = wanted

    def request(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Tracker.submit` the form describes."""
        kwargs: dict[str, Any] = {
            "model": self.model.value,
            "resolution": self.resolution.value,
            "aspect_ratio": self.aspect_ratio.value,
        }
        if self.mode.value == Mode.REFERENCE.value:
            kwargs["reference_images"] = self.reference_images.value.split()
        elif self.mode.value == Mode.FIRST_LAST.value:
            kwargs["first_image"] = self.first_image.value.strip() or None
            kwargs["last_image"] = self.last_image.value.strip() or None
        return kwargs

    def submit(self) -> None:
        """Submit the form's prompt (what the Submit button does)."""
        self.button.disabled = True
        try:
            task = self._tracker.submit(self.prompt.value, label=self.label.value.strip() or None,
                                        **self.request())
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never a traceback
            _fail(self._report, "submit", exc)
            return
        finally:
            self.button.disabled = False
        self.prompt.value = ""
        self.label.value = ""
        self._report(f"submitted {task.id} ({task.status_text})", True)
        self._submitted(task.id)


class TrackForm:
    """A box to paste task ids created elsewhere, and a Track button."""

    def __init__(self, tracker: Tracker, report: Report,
                 tracked: Callable[[str], None]) -> None:
        self._tracker, self._report, self._tracked = tracker, report, tracked
        self.ids = widgets.Textarea(
            placeholder="paste task ids (separated by spaces, commas or new lines)",
            layout=widgets.Layout(width="100%", height="56px"))
        self.button = widgets.Button(description="Track", icon="plus")
        self.button.on_click(lambda _: self.track())
        self.widget = widgets.VBox([self.ids, self.button])

    def track(self) -> None:
        """Track the pasted ids (what the Track button does)."""
        ids = split_ids(self.ids.value)
        if not ids:
            self._report("paste one or more task ids first", False)
            return
        self.button.disabled = True
        try:
            tasks = self._tracker.track_many(ids)
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never a traceback
            _fail(self._report, "track", exc)
            return
        finally:
            self.button.disabled = False
        self.ids.value = ""
        failed = sum(1 for t in tasks if t.error)
        note = f"; {failed} with an error (see their rows)" if failed else ""
        self._report(f"tracking {len(tasks)} task(s){note}", True)
        self._tracked(tasks[-1].id)


class ExportBar:
    """The tasks DataFrame into a notebook variable, or to a CSV / Parquet file."""

    def __init__(self, tracker: Tracker, report: Report) -> None:
        self._tracker, self._report = tracker, report
        self.name = widgets.Text(value="veo_tasks", description="variable",
                                 layout=widgets.Layout(width="240px"))
        self.to_variable = widgets.Button(description="To variable", icon="table")
        self.path = widgets.Text(value="veo_nb_tasks", description="file",
                                 layout=widgets.Layout(width="320px"))
        self.to_csv = widgets.Button(description="CSV", icon="download")
        self.to_parquet = widgets.Button(description="Parquet", icon="download")
        self.to_variable.on_click(lambda _: self.export_variable())
        self.to_csv.on_click(lambda _: self.export_file(".csv"))
        self.to_parquet.on_click(lambda _: self.export_file(".parquet"))
        self.widget = widgets.VBox([
            widgets.HBox([self.name, self.to_variable]),
            widgets.HBox([self.path, self.to_csv, self.to_parquet]),
        ])

    def export_variable(self) -> None:
        """Set the variable named in the form to ``tracker.tasks()`` in the
        notebook's namespace (needs IPython)."""
        from IPython import get_ipython

        name = self.name.value.strip()
        if not name.isidentifier() or keyword.iskeyword(name):
            self._report(f"{name!r} is not a valid Python variable name", False)
            return
        shell = get_ipython()
        if shell is None:
            self._report("exporting to a variable needs IPython (a notebook or IPython shell); "
                         "use tracker.tasks() instead", False)
            return
        try:
            frame = self._tracker.tasks()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            _fail(self._report, "export", exc)
            return
        shell.user_ns[name] = frame
        self._report(f"{name} = tracker.tasks() ({len(frame)} rows)", True)

    def export_file(self, suffix: str) -> None:
        """Write ``tracker.tasks()`` to the form's path with ``suffix``."""
        text = self.path.value.strip()
        if not text:
            self._report("type a file name first", False)
            return
        try:
            path = self._tracker.export(Path(text).with_suffix(suffix), what="tasks")
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            _fail(self._report, "export", exc)
            return
        self._report(f"wrote {path}", True)
