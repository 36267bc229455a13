"""Create-request validation: every model × resolution × mode against an
independent copy of the provider's capability table. Invalid requests must
raise ValidationError saying what to change, and must send nothing."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest

from scripted_server import Reply, ScriptedServer
from veo_nb import ValidationError
from veo_nb.client import VeoClient

# The provider's table, written out again here on purpose (not read from _spec).
CAPABILITIES = {
    # model: (resolutions, max reference images, first/last frame)
    "veo_3_1_fast": ({"720p", "1080p", "4K"}, 3, True),
    "veo_3_1_pro": ({"720p", "1080p", "4K"}, 3, True),
    "veo_3_1_pro_stable": ({"720p", "1080p"}, 3, True),
    "veo_3_1_fast_stable": ({"720p", "1080p"}, 0, True),
}
RESOLUTIONS = {  # as typed → canonical (None: not a resolution)
    "720p": "720p",
    "720P": "720p",
    "1080p": "1080p",
    "1080P": "1080p",
    "4K": "4K",
    "4k": "4K",
    "480p": None,
}
IMG = [f"https://img.example.com/{i}.png" for i in range(4)]
MODES = {  # name → (reference_images, first_image, last_image)
    "text": (None, None, None),
    "ref1": (IMG[:1], None, None),
    "ref2": (IMG[:2], None, None),
    "ref3": (IMG[:3], None, None),
    "ref4": (IMG[:4], None, None),
    "ref_str": (IMG[0], None, None),
    "first": (None, IMG[0], None),
    "first_last": (None, IMG[0], IMG[1]),
    "last_only": (None, None, IMG[1]),
    "ref_and_first": (IMG[:1], IMG[0], None),
    "ref_and_first_last": (IMG[:2], IMG[0], IMG[1]),
}


def problems(model: str, typed_res: str, mode: str) -> list[tuple[str, ...]]:
    """Each problem as the words its message must contain (any one problem
    may be the one reported)."""
    resolutions, max_refs, first_last = CAPABILITIES[model]
    refs, first, last = MODES[mode]
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    found: list[tuple[str, ...]] = []
    res = RESOLUTIONS[typed_res]
    if res is None:
        found.append((typed_res, "720p", "1080p", "use"))
    elif res not in resolutions:
        found.append((model, res, "use"))
    if refs and (first or last):
        found.append(("reference_images", "first_image", "not both"))
    if last and not first:
        found.append(("last_image", "first_image", "pass"))
    if refs and max_refs == 0:
        found.append((model, "reference images", "first_image"))
    elif len(refs) > max_refs:
        found.append(("at most 3", f"remove {len(refs) - max_refs}"))
    if (first or last) and not first_last:  # pragma: no cover - every model has it today
        found.append((model, "first"))
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    def echo(rec):  # answer like the service: a queued task
        body = json.loads(rec.body)
        return Reply.json({"id": "vgen_ok", "object": "video", "created": 1761635478,
                           "model": body["model"], "status": "queued"})

    with ScriptedServer(repeat_last=True) as srv:
        srv.script(echo)
        yield srv


@pytest.fixture(scope="module")
def client(server: ScriptedServer) -> Iterator[VeoClient]:
    with VeoClient(api_key="test-key-0000", base_url=server.url, max_retries=0) as c:
        yield c


CASES = list(itertools.product(CAPABILITIES, RESOLUTIONS, MODES))


@pytest.mark.parametrize(("model", "resolution", "mode"), CASES)
def test_capability_matrix(
    server: ScriptedServer, client: VeoClient, model: str, resolution: str, mode: str
) -> None:
    refs, first, last = MODES[mode]
    expected_problems = problems(model, resolution, mode)
    before = server.hits()
    kwargs = dict(model=model, resolution=resolution, reference_images=refs,
                  first_image=first, last_image=last)
    if expected_problems:
        with pytest.raises(ValidationError) as info:
            client.create_video("a cat surfing", **kwargs)
        message = str(info.value)
        assert any(all(w in message for w in words) for words in expected_problems), (
            f"{message!r} should mention one of {expected_problems}"
        )
        assert server.hits() == before, "an invalid request must not be sent"
        return
    task = client.create_video("a cat surfing", **kwargs)
    assert task.id == "vgen_ok"
    assert server.hits() == before + 1
    sent = server.requests[-1]
    assert sent.method == "POST" and sent.path.endswith("/v1/veo/videos")
    body = json.loads(sent.body)
    assert body["model"] == model
    assert body["resolution"] == RESOLUTIONS[resolution]
    assert body["aspect_ratio"] == "16:9"
    assert body["prompt"] == "a cat surfing"
    refs_list = [refs] if isinstance(refs, str) else list(refs or [])
    assert body.get("input_reference", []) == refs_list
    assert body.get("first_image") == first
    assert body.get("last_image") == last


def _assert_rejected(server: ScriptedServer, client: VeoClient, words: tuple[str, ...], **kwargs) -> None:
    before = server.hits()
    kwargs.setdefault("prompt", "a cat")
    prompt = kwargs.pop("prompt")
    with pytest.raises(ValidationError) as info:
        client.create_video(prompt, **kwargs)
    for w in words:
        assert w in str(info.value)
    assert server.hits() == before


BAD_URLS = ["ftp://img.example.com/a.png", "file:///etc/passwd", "data:image/png;base64,AAAA",
            "img.example.com/a.png", "https://", "", "   "]
URL_CASES = [
    (where, url)
    for where in ("reference_images", "first_image", "last_image")
    for url in BAD_URLS
    if not (where == "last_image" and not url.strip())  # an empty last_image is simply absent
]


@pytest.mark.parametrize(("where", "url"), URL_CASES)
def test_non_http_image_urls(server: ScriptedServer, client: VeoClient, where: str, url: str) -> None:
    if where == "reference_images":
        kwargs = {"reference_images": [IMG[0], url]}
    elif where == "first_image":
        # an empty first_image is "no first image": pair it with a last image
        kwargs = {"first_image": url, "last_image": IMG[1]}
    else:
        kwargs = {"first_image": IMG[0], "last_image": url}
    _assert_rejected(server, client, (), **kwargs)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t", None, 42])
def test_empty_or_non_text_prompt(server: ScriptedServer, client: VeoClient, prompt: object) -> None:
    _assert_rejected(server, client, ("prompt",), prompt=prompt)


@pytest.mark.parametrize("ratio", ["16:9-720p", "4:3", "16x9", "", None, "1:1"])
def test_bad_aspect_ratio(server: ScriptedServer, client: VeoClient, ratio: object) -> None:
    _assert_rejected(server, client, ("aspect_ratio", "16:9", "9:16"), aspect_ratio=ratio)


def test_portrait_aspect_ratio_accepted(server: ScriptedServer, client: VeoClient) -> None:
    client.create_video("a cat", aspect_ratio="9:16")
    assert json.loads(server.requests[-1].body)["aspect_ratio"] == "9:16"


@pytest.mark.parametrize("model", ["", "  ", None, 3])
def test_a_model_that_is_no_name(server: ScriptedServer, client: VeoClient, model: object) -> None:
    _assert_rejected(server, client, ("model", "veo_3_1_fast", "use"), model=model)


@pytest.mark.parametrize("model", ["veo_4", "VEO_3_1_FAST_X", "veo_3_1"])
def test_an_unknown_model_is_sent_as_asked_with_a_warning(server: ScriptedServer, client: VeoClient,
                                                          model: str) -> None:
    """The service adds models before veo_nb knows them: the request goes out
    (the service decides), and a warning says what could not be checked."""
    from veo_nb import UnknownModelWarning
    from veo_nb._spec import _WARNED

    _WARNED.discard(model)
    with pytest.warns(UnknownModelWarning, match=f"{model}.*veo_3_1_fast.*could not be checked"):
        client.create_video("a cat", model=model, resolution="4K")
    assert json.loads(server.requests[-1].body)["model"] == model


@pytest.mark.parametrize("resolution", ["480p", "8K", "", None, 720])
def test_unknown_resolution(server: ScriptedServer, client: VeoClient, resolution: object) -> None:
    _assert_rejected(server, client, ("resolution",), resolution=resolution)


@pytest.mark.parametrize("task_id", ["", "   ", None, 12, b"vgen_1"])
def test_get_result_rejects_bad_ids(server: ScriptedServer, client: VeoClient, task_id: object) -> None:
    before = server.hits()
    with pytest.raises(ValidationError, match="task_id"):
        client.get_result(task_id)  # type: ignore[arg-type]
    assert server.hits() == before


def test_validation_happens_before_the_key_check(server: ScriptedServer) -> None:
    with VeoClient(base_url=server.url) as keyless:
        with pytest.raises(ValidationError):
            keyless.create_video("a cat", resolution="8K")
    assert all(r.headers.get("Authorization") != "Bearer " for r in server.requests)


@pytest.mark.parametrize("url", ["http://cdn.example:99999/v.mp4", "https://cdn.example:abc/v.mp4",
                                 "http://cdn.example:0/v.mp4", "http://[bad/v.mp4", "http://[::1/x"])
def test_bad_ports_and_brackets_are_validation_errors(url):
    from veo_nb._urls import check_http_url, is_http_url, public_url

    assert is_http_url(url) is False
    with pytest.raises(ValidationError, match="video_url must be an http"):
        check_http_url(url, "video_url")
    assert "?" not in public_url(url + "?sig=SECRET") and "SECRET" not in public_url(url + "?sig=SECRET")


def test_download_of_a_bad_port_link_is_a_validation_error(tmp_path):
    from veo_nb import Task, TaskStatus, VeoClient

    task = Task(id="vgen_1", status=TaskStatus.COMPLETED, video_url="http://cdn.example:99999/v.mp4")
    with VeoClient(api_key="k", base_url="http://127.0.0.1:9") as client:
        with pytest.raises(ValidationError, match="port"):
            client.download(task, tmp_path)
