"""Facts about the VEO service, and the validation of create requests.

Everything the client, the emulator and the tracker know about the service
lives here, copied from the provider's documentation, so that there is one
table to change when the service changes.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from ._urls import check_http_url
from .errors import ValidationError

#: The documented base URL of the real service.
BASE_URL = "https://zcbservice.aizfw.cn/kyyReactApiServer"
#: Path of the create endpoint, below the base URL.
CREATE_PATH = "/v1/veo/videos"
#: Path of the result endpoint, below the base URL.
RESULT_PATH = "/v1/result/{id}"
#: Never poll one task more often than this (seconds).
MIN_POLL_INTERVAL_S = 30.0
#: A finished video's URL is valid this long after completion (seconds).
URL_LIFETIME_S = 24 * 3600.0
#: Every generated video lasts this long (seconds).
VIDEO_DURATION_S = 8.0
#: Most reference images one request may carry.
MAX_REFERENCE_IMAGES = 3
#: Accepted aspect ratios.
ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16")
#: Accepted resolutions, in their canonical spelling.
RESOLUTIONS: tuple[str, ...] = ("720p", "1080p", "4K")


class Mode(str, enum.Enum):
    """How a task was asked for: text only, reference images, or first/last frame."""

    TEXT = "text"
    REFERENCE = "reference"
    FIRST_LAST = "first_last"

    def __str__(self) -> str:
        return self.value


#: Documented time to finish, (low, high) seconds, by mode.
ESTIMATES_S: dict[Mode, tuple[float, float]] = {
    Mode.TEXT: (120.0, 300.0),
    Mode.REFERENCE: (120.0, 300.0),
    Mode.FIRST_LAST: (180.0, 300.0),
}


@dataclass(frozen=True)
class ModelSpec:
    """What one model can do."""

    name: str
    resolutions: tuple[str, ...]
    max_reference_images: int
    first_last_frame: bool = True

    def supports(self, mode: Mode) -> bool:
        """Whether this model accepts requests in ``mode``."""
        if mode is Mode.REFERENCE:
            return self.max_reference_images > 0
        if mode is Mode.FIRST_LAST:
            return self.first_last_frame
        return True


#: The model capability table, keyed by model name.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("veo_3_1_fast", ("720p", "1080p", "4K"), MAX_REFERENCE_IMAGES),
        ModelSpec("veo_3_1_pro", ("720p", "1080p", "4K"), MAX_REFERENCE_IMAGES),
        ModelSpec("veo_3_1_pro_stable", ("720p", "1080p"), MAX_REFERENCE_IMAGES),
        ModelSpec("veo_3_1_fast_stable", ("720p", "1080p"), 0),
    )
}
DEFAULT_MODEL = "veo_3_1_fast"
#: Model names already warned about in this process (once each).
_WARNED: set[str] = set()


class UnknownModelWarning(UserWarning):
    """A model that veo_nb's table does not know was sent as asked; the
    checks that depend on the model could not be made."""


def register_model(name: str, *, resolutions: Sequence[str] = ("720p", "1080p"),
                   max_reference_images: int = 0, first_last_frame: bool = True) -> None:
    """Teach veo_nb a model the service offers that this release does not
    know yet (the service adds and removes models: ``veo_3_1_lite``...), so
    its requests are checked like the others' and the panel's form offers it.
    ``resolutions`` it renders (of ``720p``, ``1080p``, ``4K``), how many
    reference images it takes (0: none), whether it takes first/last frames.
    Registering a known name replaces its entry."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValidationError(f"a model name must be a non-empty string without spaces "
                              f"around it, got {name!r}")
    res = tuple(normalize_resolution(r) for r in resolutions)
    if not res:
        raise ValidationError("resolutions must name at least one of " + ", ".join(RESOLUTIONS))
    if not isinstance(max_reference_images, int) or not 0 <= max_reference_images <= 3:
        raise ValidationError(f"max_reference_images must be 0 to {MAX_REFERENCE_IMAGES}, "
                              f"got {max_reference_images!r}")
    MODELS[name] = ModelSpec(name, res, max_reference_images, bool(first_last_frame))


def normalize_resolution(value: Any) -> str:
    """Return the canonical spelling of a resolution (``"4k"`` → ``"4K"``)."""
    if not isinstance(value, str):
        raise ValidationError(
            f"resolution must be a string such as '720p', not {type(value).__name__}"
        )
    wanted = value.strip().lower()
    for canonical in RESOLUTIONS:
        if canonical.lower() == wanted:
            return canonical
    raise ValidationError(
        f"unknown resolution {value!r}: use one of {', '.join(RESOLUTIONS)}"
    )


def request_mode(
    reference_images: Sequence[str] | str | None,
    first_image: str | None,
    last_image: str | None,
) -> Mode:
    """The mode a request with these image arguments is in (no validation)."""
    if first_image or last_image:
        return Mode.FIRST_LAST
    if reference_images:
        return Mode.REFERENCE
    return Mode.TEXT


def build_create_payload(
    prompt: Any,
    *,
    model: Any = DEFAULT_MODEL,
    resolution: Any = "720p",
    aspect_ratio: Any = "16:9",
    reference_images: Sequence[str] | str | None = None,
    first_image: str | None = None,
    last_image: str | None = None,
    unknown_models: str = "refuse",
) -> dict[str, Any]:
    """Validate a create request and return the JSON body to send.

    Raises :class:`veo_nb.ValidationError` with a message that says what to
    change. The same rules are applied by the client (before anything is
    sent) and by the emulator (which answers 400).

    A model this table does not know is refused with ``unknown_models=
    "refuse"`` (the emulator); with ``"send"`` (the client) it is sent as
    asked after one :class:`UnknownModelWarning` per name, and only the
    checks that do not depend on the model are made.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValidationError(f"model must be a model name: use one of {', '.join(MODELS)} "
                              f"(or another the service offers), got {model!r}")
    spec = MODELS.get(model.strip())
    if spec is None:
        if unknown_models != "send":
            raise ValidationError(f"unknown model {model!r}: use one of {', '.join(MODELS)}")
        spec = ModelSpec(model.strip(), RESOLUTIONS, MAX_REFERENCE_IMAGES)
        if spec.name not in _WARNED:
            _WARNED.add(spec.name)
            warnings.warn(UnknownModelWarning(
                f"model {spec.name!r} is not in veo_nb's table ({', '.join(MODELS)}): it is "
                "sent as asked, but whether it offers this resolution, reference images or "
                "first/last frames could not be checked; veo_nb.register_model("
                f"{spec.name!r}, ...) teaches it"), stacklevel=4)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt must be a non-empty string describing the video")
    res = normalize_resolution(resolution)
    if res not in spec.resolutions:
        raise ValidationError(
            f"model {spec.name} does not offer {res}: use one of "
            f"{', '.join(spec.resolutions)}, or a model that offers {res}"
        )
    if not isinstance(aspect_ratio, str) or aspect_ratio.strip() not in ASPECT_RATIOS:
        raise ValidationError(
            f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)} "
            f"(without a resolution suffix), got {aspect_ratio!r}"
        )
    if isinstance(reference_images, str):
        reference_images = [reference_images]
    refs = list(reference_images or [])
    if refs and (first_image or last_image):
        raise ValidationError(
            "reference_images and first_image/last_image are two different modes: "
            "pass one or the other, not both"
        )
    if last_image and not first_image:
        raise ValidationError("last_image needs first_image: pass first_image as well")
    payload: dict[str, Any] = {
        "model": spec.name,
        "prompt": prompt,
        "resolution": res,
        "aspect_ratio": aspect_ratio.strip(),
    }
    if refs:
        if not spec.supports(Mode.REFERENCE):
            raise ValidationError(
                f"model {spec.name} does not take reference images: use "
                f"first_image/last_image, or another model such as {DEFAULT_MODEL}"
            )
        if len(refs) > spec.max_reference_images:
            raise ValidationError(
                f"at most {spec.max_reference_images} reference images are allowed, "
                f"got {len(refs)}: remove {len(refs) - spec.max_reference_images}"
            )
        payload["input_reference"] = [
            check_http_url(u, f"reference_images[{i}]") for i, u in enumerate(refs)
        ]
    if first_image:
        payload["first_image"] = check_http_url(first_image, "first_image")
        if last_image:
            payload["last_image"] = check_http_url(last_image, "last_image")
    return payload


def payload_mode(payload: dict[str, Any]) -> Mode:
    """The mode of a create payload as built by :func:`build_create_payload`."""
    return request_mode(
        payload.get("input_reference") or payload.get("image_urls"),
        payload.get("first_image"),
        payload.get("last_image"),
    )
