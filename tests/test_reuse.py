"""Re-running a notebook does not pay again (issue #19): the quickstart and
the classroom notebooks run 5 times in one kernel by nbclient, then again
after a kernel restart, against an emulator that counts creates, as with a
real key. Exactly one run's worth of tasks is created.

Issue #28: a re-run with local images reuses its task without uploading
(the key is the images' bytes), and a task that can never give its video
(expired unsaved, no video, a link no download can use, failed) is not
reused; the re-run says why it creates a new one."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from veo_nb import SpendingCapError, TaskRecord, TaskStatus, Tracker, VeoClient, _reuse
from veo_nb.emulator import Emulator
from veo_nb.records import NO_VIDEO_REASON

REPO = Path(__file__).resolve().parents[1]
SCALE = 0.01


def _runs(nb: nbformat.NotebookNode, folder: Path, emu: Emulator, times: int,
          *, env: dict[str, str] | None = None) -> tuple[list[int], list[str]]:
    """Execute ``nb`` ``times`` times in one kernel, then once more after a
    kernel restart; the emulator's create count after each run, and every
    printed line of the last two runs."""
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("VEO_")}
    kernel_env.update(VEO_API_KEY=emu.api_key, VEO_BASE_URL=emu.base_url,
                      VEO_TIME_SCALE=str(SCALE), MPLBACKEND="agg", **(env or {}))
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    counts: list[int] = []
    printed: list[str] = []

    def run_all() -> None:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.clear_display_id_mapping(index)
                client.execute_cell(cell, index)
        counts.append(emu.stats.creates)
        printed.extend(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.outputs)

    with client.setup_kernel(env=kernel_env):
        for _ in range(times):
            run_all()
        run_sync(client.km.restart_kernel)(now=True, newports=False)
        run_sync(client.kc.wait_for_ready)(timeout=60)
        run_all()
    return counts, printed


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["01_quickstart", "02_classroom_demo"])
def test_running_a_notebook_again_and_again_creates_one_runs_worth(tmp_path: Path,
                                                                   name: str) -> None:
    work = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", work,
                    ignore=shutil.ignore_patterns("veo_nb_data", ".ipynb_checkpoints"))
    nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        counts, printed = _runs(nb, work, emu, 5)
    first = counts[0]
    assert first > 0 and counts == [first] * 6, counts
    assert any("reused vgen_" in text and "new=True" in text for text in printed)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_same_prompt_twice_in_one_cell_is_two_tasks_once(tmp_path: Path) -> None:
    """Identical submits within one run are all created (the same prompt
    gives different videos); a re-run reuses both; new=True creates."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import veo_nb\n"
                                  "tracker = veo_nb.Tracker(store='h.sqlite', media_dir='v')"),
        nbformat.v4.new_code_cell("a = tracker.submit('the same fox [duration: 121]')\n"
                                  "b = tracker.submit('the same fox [duration: 121]')\n"
                                  "print('ids', a.id, b.id, a.id != b.id)"),
    ]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        counts, printed = _runs(nb, tmp_path, emu, 3)
        ids = {line.split()[1:3].__str__() for text in printed for line in text.splitlines()
               if line.startswith("ids ")}
    assert counts == [2, 2, 2, 2], counts
    assert len(ids) == 1  # the same two tasks every run, restart included


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_mode_creates_again_and_says_a_real_key_would_have_reused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import veo_nb\n"
        "tracker = veo_nb.Tracker(veo_nb.connect(demo=True, quiet=True), store='h.sqlite')\n"
        "t = tracker.submit('a demo fox [duration: 121]')")]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        _, printed = _runs(nb, tmp_path, emu, 2)
    assert any("with a real key" in text and "would have been reused" in text
               for text in printed), printed


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_classmate_running_the_same_notebook_makes_tasks_of_their_own(tmp_path: Path) -> None:
    """One history, one key, the same notebook (the same cells): Ben's run
    creates his own task instead of reusing Ana's, and each one's re-runs
    reuse their own."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import veo_nb\n"
        "tracker = veo_nb.Tracker(store='h.sqlite', media_dir='v')\n"
        "t = tracker.submit('the class fox [duration: 121]')\n"
        "print('mine', t.id, tracker.record(t.id).owner)")]
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu:
        ana, said_ana = _runs(nb, tmp_path, emu, 2, env={"VEO_NB_OWNER": "ana"})
        ben, said_ben = _runs(nb, tmp_path, emu, 2, env={"VEO_NB_OWNER": "ben"})
    assert ana == [1, 1, 1] and ben == [2, 2, 2], (ana, ben)

    def mine(printed: list[str]) -> set[tuple[str, str]]:
        return {tuple(line.split()[1:3]) for text in printed for line in text.splitlines()
                if line.startswith("mine ")}
    (ana_id, ana_owner), = mine(said_ana)
    (ben_id, ben_owner), = mine(said_ben)
    assert (ana_owner, ben_owner) == ("ana", "ben") and ana_id != ben_id


# ---------------------------------------------------------------- re-runs in one kernel
# The tests below run cells on ipykernel's in-process kernel: a real kernel
# (execute requests, execution counts, the history a cell is known by) in
# this process, so a test can move the emulator's clock or delete a saved
# video between two runs of a cell.

#: A 1×1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")


class Kernel:
    """ipykernel's in-process kernel; :meth:`run` executes one cell."""

    def __init__(self) -> None:
        from ipykernel.inprocess.manager import InProcessKernelManager

        self.manager = InProcessKernelManager()
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.ns: dict[str, object] = self.manager.kernel.shell.user_ns

    def run(self, source: str) -> str:
        """Run ``source`` as a cell; what it printed (its error fails the test)."""
        self.client.execute(source)
        printed, errors = [], []
        for msg in self.client.iopub_channel.get_msgs():
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))
        assert not errors, errors
        return "".join(printed)

    def close(self) -> None:
        """Shut the kernel down, and its shell with it: later tests of the
        session run outside a notebook again (no cell, no reuse)."""
        from IPython.core.interactiveshell import InteractiveShell

        self.client.stop_channels()
        self.manager.shutdown_kernel()
        InteractiveShell.clear_instance()


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "h.sqlite")
    return str(request.getfixturevalue("pg_db_url"))


@contextmanager
def _tracked(kernel: Kernel, store: str | Path, media: Path, *, uploader: Uploads | None = None,
             **options: object) -> Iterator[tuple[Emulator, Tracker]]:
    """An emulator and a reusing tracker of it on ``store``, the tracker
    named ``tracker`` in the kernel's cells."""
    with Emulator(time_scale=SCALE, failure_rate=0, video_size="sample") as emu, \
            Tracker(emu.client(uploader=uploader), store=store, media_dir=media, reuse=True,
                    **options) as tracker:  # type: ignore[arg-type]
        kernel.ns["tracker"] = tracker
        yield emu, tracker


class Uploads:
    """An uploader that stores nothing and returns a new URL for each upload
    (as a presigned URL is): the uploads it was asked for."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, str]] = []

    def __call__(self, data: bytes, filename: str) -> str:
        self.got.append((data, filename))
        return f"https://images.example.org/{len(self.got)}/{filename}?sig=new"


def test_a_rerun_with_local_images_reuses_its_task_and_uploads_nothing(
        kernel: Kernel, store_url: str, tmp_path: Path) -> None:
    """Defect 8: the reuse key is the images' bytes, looked up before any
    upload: a path, bytes and a PIL image made again by the cell."""
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    uploads = Uploads()
    with _tracked(kernel, store_url, tmp_path / "v", uploader=uploads) as (emu, tracker):
        kernel.ns.update(frame=frame, PNG=PNG)
        cell = (f"# {store_url}\nfrom PIL import Image\n"
                "a = tracker.submit('a fox from frames [duration: 121]', first_image=frame, "
                "last_image=PNG)\n"
                "b = tracker.submit('a fox like these [duration: 121]', reference_images=["
                "Image.new('RGB', (4, 4), 'red'), 'https://images.example.org/given.png'])")
        kernel.run(cell)
        first = (kernel.ns["a"].id, kernel.ns["b"].id)  # type: ignore[attr-defined]
        assert emu.stats.creates == 2 and len(uploads.got) == 3
        printed = kernel.run(cell)
        again = (kernel.ns["a"].id, kernel.ns["b"].id)  # type: ignore[attr-defined]
        assert emu.stats.creates == 2, printed
        assert len(uploads.got) == 3  # a reused task uploads nothing
        assert again == first and printed.count("reused ") == 2
        # the record keeps the request as sent: the uploaded URLs
        assert tracker.record(first[0]).request["first_image"].startswith(
            "https://images.example.org/1/frame.png")
        frame.write_bytes(PNG + b"\0")  # another image: another task, its images uploaded
        printed = kernel.run(cell)
        assert emu.stats.creates == 3 and len(uploads.got) == 5, printed
        assert kernel.ns["a"].id not in first  # type: ignore[attr-defined]


def test_url_only_requests_keep_the_reuse_key_of_earlier_versions(
        kernel: Kernel, tmp_path: Path) -> None:
    """The key of a request without local images is the hash of the request
    as sent, as 0.3 computed it, so a store of 0.3 keeps reusing."""
    with _tracked(kernel, tmp_path / "h.sqlite", tmp_path / "v") as (_emu, tracker):
        kernel.run("t = tracker.submit('a fox by url [duration: 121]', "
                   "first_image='https://images.example.org/f.png')")
        task = kernel.ns["t"]
        record = tracker.record(task.id)  # type: ignore[attr-defined]
        client = tracker.client
        old_key = _reuse.request_key(client.service, client.key_fingerprint, tracker.owner,
                                     record.request)
        cell = next(c for c in tracker.store._read(  # type: ignore[attr-defined]
            lambda cur: cur.execute("SELECT cell, request, n FROM reuse").fetchall()))
    assert tuple(cell[1:]) == (old_key, 0)


def _run_wait(kernel: Kernel, tracker: Tracker, cell: str) -> tuple[str, str]:
    """Run ``cell`` (which sets ``t``) and wait for its task; (id, printed)."""
    printed = kernel.run(cell)
    task_id = kernel.ns["t"].id  # type: ignore[attr-defined]
    tracker.wait(task_id, timeout=60)
    return task_id, printed


def test_a_rerun_whose_earlier_video_expired_unsaved_creates_a_new_task(
        kernel: Kernel, store_url: str, tmp_path: Path) -> None:
    """Defect 9: the link expired before the video was saved (the kernel was
    off for a day): the re-run creates a new task and says why."""
    with _tracked(kernel, store_url, tmp_path / "v") as (emu, tracker):
        cell = f"# {store_url}\nt = tracker.submit('a fox for later [duration: 1500]')"
        kernel.run(cell)
        first = kernel.ns["t"].id  # type: ignore[attr-defined]
        emu.advance(15 + emu.url_lifetime_s + 1)  # finished, and its link gone
        tracker.wait(first, timeout=60)
        assert tracker.record(first).download_state == "expired"
        printed = kernel.run(cell)
        task_id = kernel.ns["t"].id  # type: ignore[attr-defined]
        emu.advance(16)  # finished, its link fresh
        tracker.wait(task_id, timeout=60)
        assert emu.stats.creates == 2 and task_id != first, printed
        assert f"created a new task: the earlier task {first}'s video expired before it " \
               "was saved" in printed
        assert tracker.record(task_id).download_state == "saved"
        printed = kernel.run(cell)  # the new one is reused in its turn
        assert emu.stats.creates == 2 and f"reused {task_id}" in printed


def test_a_rerun_after_a_video_the_service_never_gave_creates_and_says_why(
        kernel: Kernel, tmp_path: Path) -> None:
    """A task completed without a video (safety filter) is never reused; the
    re-run says why it creates a new one."""
    with _tracked(kernel, tmp_path / "h.sqlite", tmp_path / "v") as (emu, tracker):
        cell = "t = tracker.submit('a blocked fox [no-video] [duration: 121]')"
        first, _ = _run_wait(kernel, tracker, cell)
        second, printed = _run_wait(kernel, tracker, cell)
    assert emu.stats.creates == 2 and second != first
    assert f"created a new task: the earlier task {first} {NO_VIDEO_REASON}" in printed


def test_a_rerun_after_a_link_that_can_never_be_downloaded_creates_a_new_task(
        kernel: Kernel, tmp_path: Path) -> None:
    """A service that answered a link no download can use (a bad port): the
    download failed for good, so a re-run creates a new task."""
    from scripted_server import Recorded, Reply, ScriptedServer

    def answer(request: Recorded) -> Reply:
        if request.method == "POST":  # a new id for each create
            return Reply.json({"id": f"vgen_{len(server.requests)}", "status": "queued"})
        return Reply.json({"id": request.path.rsplit("/", 1)[-1], "status": "completed",
                           "video_url": "http://cdn.example:99999/v.mp4"})

    with ScriptedServer(repeat_last=True) as server, \
            VeoClient(api_key="k-123456", base_url=server.url, time_scale=SCALE) as client, \
            Tracker(client, store=tmp_path / "h.sqlite", media_dir=tmp_path / "v",
                    reuse=True) as tracker:
        server.script(answer)
        kernel.ns["tracker"] = tracker
        cell = "t = tracker.submit('a fox behind a bad link')"
        first, _ = _run_wait(kernel, tracker, cell)
        assert tracker.record(first).download_state == "failed"
        second, printed = _run_wait(kernel, tracker, cell)
        creates = [r for r in server.requests if r.method == "POST"]
    assert len(creates) == 2 and second != first, printed
    assert f"the earlier task {first}'s video link can never be downloaded" in printed


def test_a_rerun_whose_saved_video_was_deleted_reuses_and_fetches_it_again(
        kernel: Kernel, tmp_path: Path) -> None:
    """A deleted file is not a lost video while its link works: the re-run
    reuses the task and the video is saved again."""
    with _tracked(kernel, tmp_path / "h.sqlite", tmp_path / "v") as (emu, tracker):
        cell = "t = tracker.submit('a fox to keep [duration: 121]')"
        first, _ = _run_wait(kernel, tracker, cell)
        path = Path(tracker.record(first).video_path or "")
        path.unlink()
        again, printed = _run_wait(kernel, tracker, cell)
        assert again == first and f"reused {first}" in printed and emu.stats.creates == 1
        assert path.is_file() and tracker.record(first).download_state == "saved"


def test_submit_many_counts_and_reuses_local_images_as_submit_does(kernel: Kernel,
                                                                  tmp_path: Path) -> None:
    """submit_many's all-or-nothing cap check counts a row with a local image
    as a create (none is uploaded before the whole batch is allowed); a
    re-run of the cell reuses such rows without uploading again."""
    import pandas as pd

    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    uploads = Uploads()
    rows = pd.DataFrame({"prompt": ["a fox from a frame [duration: 121]",
                                    "a fox from bytes [duration: 121]"],
                         "first_image": [str(frame), PNG]})
    with _tracked(kernel, tmp_path / "h.sqlite", tmp_path / "v", uploader=uploads,
                  max_tasks_per_day=3) as (emu, tracker):
        kernel.ns["rows"] = rows
        cell = "out = tracker.submit_many(rows)"
        kernel.run(cell)
        assert emu.stats.creates == 2 and len(uploads.got) == 2
        printed = kernel.run(cell)
        assert emu.stats.creates == 2 and len(uploads.got) == 2, printed
        assert printed.count("reused ") == 2
        with pytest.raises(SpendingCapError):  # outside the cell: 2 new, 1 left today
            tracker.submit_many(rows)
        assert emu.stats.creates == 2 and len(uploads.got) == 2


def _completed(**changes: object) -> TaskRecord:
    """A completed task of an earlier run whose link expires in an hour."""
    now = datetime.now(timezone.utc)
    base = TaskRecord("vgen_1", prompt="a fox", status=TaskStatus.COMPLETED,
                      status_text="completed", video_url="https://cdn.example.org/v.mp4",
                      url_expires_at=now + timedelta(hours=1), download_state="pending")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "why"), [
    ({}, None),  # still being fetched
    ({"status": TaskStatus.PROCESSING, "video_url": None}, None),
    ({"download_state": "saved", "video_path": "GONE"}, None),  # fetched again
    ({"download_state": "none"}, None),  # downloads off: played from its link
    ({"download_state": "saved", "video_path": "GONE", "saved_on": "another-host",
      "url_expires_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}, None),  # saved there
    ({"download_state": "saved", "video_path": "HERE",
      "url_expires_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}, None),
    ({"download_state": "expired"}, "vgen_1's video expired before it was saved"),
    ({"download_state": "none", "url_expires_at": datetime(2026, 1, 1, tzinfo=timezone.utc)},
     "vgen_1's video expired before it was saved"),
    ({"download_state": "saved", "video_path": "GONE",
      "url_expires_at": datetime(2026, 1, 1, tzinfo=timezone.utc)},
     "vgen_1's video expired before it was saved"),
    ({"download_state": "failed", "video_url": "http://cdn.example:99999/v.mp4"},
     "vgen_1's video link can never be downloaded"),
    ({"video_url": None}, f"vgen_1 {NO_VIDEO_REASON}"),
    ({"status": TaskStatus.FAILED, "error": "bad prompt"}, "vgen_1 failed: bad prompt"),
])
def test_which_earlier_tasks_can_still_give_their_video(tmp_path: Path, changes: dict[str, object],
                                                         why: str | None) -> None:
    here = tmp_path / "here.mp4"
    here.write_bytes(b"video")
    paths = {"GONE": str(tmp_path / "gone.mp4"), "HERE": str(here)}
    if "video_path" in changes:
        changes = {**changes, "video_path": paths[str(changes["video_path"])]}
    said = _reuse.why_not_reused(_completed(**changes))
    assert said == (None if why is None else f"the earlier task {why}")
