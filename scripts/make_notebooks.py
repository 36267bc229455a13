"""Write notebooks/*.ipynb from the cell texts below, without outputs.

The notebooks are generated so that what is committed is clean (no outputs,
no execution counts, no saved widget state with base64 videos) and every
change is a readable diff of this file. Edit the cells here, then::

    .venv/bin/python scripts/make_notebooks.py          # rewrite notebooks/
    .venv/bin/python scripts/make_notebooks.py --check  # exit 1 if they differ

To keep an edit made in JupyterLab instead, copy the cell text back here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {"name": "python"}


def md(text: str) -> tuple[str, str]:
    return ("markdown", text.strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", text.strip("\n"))


# ---------------------------------------------------------------------------
QUICKSTART = [
    md("""
# veo_nb quickstart

Generate a few videos with VEO and watch them finish, live, in this notebook.
Use **Run → Run All Cells**; everything below runs top to bottom.

**Demo mode or the real service?**

* **Demo mode (the default).** When no `VEO_API_KEY` is set, `veo_nb.connect()`
  starts an *emulator* of the VEO service inside this notebook's kernel: the same
  HTTP API, a clock that runs about 8× faster (tasks finish in 15–45 s instead of
  2–5 minutes), sample test-pattern videos, nothing sent over the internet and
  nothing billed.
* **The real service.** Set `VEO_API_KEY` in the environment *before* starting
  Jupyter (for example `export VEO_API_KEY=sk-...`) and the very same cells talk
  to the real VEO API. Every task is then billed and takes 2–5 minutes.
"""),
    code("""
import veo_nb

client = veo_nb.connect()
print("demo mode (emulator)" if client.demo else "real VEO service")
"""),
    md("""
## 1. A tracker

A `Tracker` submits tasks and follows them for you: it polls in the background
(never more often than the service's 30-second rule allows), records every status
change in a small SQLite file, and downloads each finished MP4 before its 24-hour
link expires.

The file lives in `veo_nb_data/` next to this notebook, so the history survives
a kernel restart.
"""),
    code("""
tracker = veo_nb.Tracker(client, store="veo_nb_data/quickstart.sqlite")
tracker
"""),
    md("""
The tracker polls in the background by itself from now on: nothing else needs to
run for the statuses to move. Running this cell again (or **Run All** again) does
not start a second poller: every tracker on the same history file shares one.
"""),
    md("""
## 2. Submit a few prompts

`submit` returns straight away with the new task (its id and status); the video
is generated on the service while you keep working.

**Running this cell again does not pay again.** With a real key, each video is
billed; when a cell runs again (a re-run, Run All, Run All after a kernel
restart), its submits return the tasks its last run created, and a line says so:
`reused vgen_… from 14:02 (same request in this cell)`. `submit(..., new=True)`
makes another. In demo mode nothing is billed, so re-runs create new tasks to show
live progress again, and the line says what a real key would have reused.
"""),
    code("""
submitted = [
    tracker.submit("A red fox trotting through fresh snow at sunrise, cinematic"),
    tracker.submit("A paper boat drifting down a rainy street, close-up"),
    tracker.submit("Timelapse of clouds rolling over a mountain lake", aspect_ratio="9:16"),
]
[(task.id, task.status.value) for task in submitted]
"""),
    md("""
In demo mode, a prompt can steer the emulator with a directive in square
brackets, to show what unusual outcomes look like:

* `[fail: <message>]` makes the task fail with exactly that message,
* `[duration: <seconds>]` sets how long the task takes (in real-service seconds,
  so `[duration: 400]` takes about 48 s here),
* `[no-video]` completes without a video, as when a safety filter blocks it.

The failing task below reports an error message **that contains HTML and a
script**. veo_nb always shows the service's messages (and your prompts) as plain
text, never as HTML: markup like this appears literally and can neither change
the page nor run code.

(These prompts only go to the emulator: with a real key this cell does nothing.)
"""),
    code("""
if client.demo:
    submitted.append(tracker.submit(
        "[fail: <b>Blocked</b> by <script>window.veoXss = 1</script> policy "
        "<img src=x onerror=\\"window.veoXss = 2\\">] A neon city street at night"
    ))
    submitted.append(tracker.submit("[duration: 400] A slow drone flight over an autumn forest"))
"""),
    md("""
## 3. The live panel

The panel refreshes by itself: statuses move from *queued* to *processing* to
*completed* or *failed* without you running anything, the newest tasks come
first, and each finished video shows as a card: click **▶ Play** to watch it (no
video is sent to your browser before you ask for it). The **Gallery** and
**History** tabs show all videos and every recorded event.

Showing a panel again (re-running the cell, or Run All) replaces the previous
one, whose output then says so: there is one live panel per history.
"""),
    code("""
veo_nb.panel(tracker)
"""),
    md("""
## 4. The results as a DataFrame

`tasks()` returns one row per task: prompt, model, status, timings, error message,
and the path of the downloaded MP4. It is a snapshot: run the cell again to see
the statuses move on (the panel above shows them live).
"""),
    code("""
df = tracker.tasks()
df[["label", "prompt", "status", "total_s", "video_path"]]
"""),
    md("""
`veo_nb.table()` shows any of these tables for people: local times to the second,
rounded numbers, no `<NA>`, and long messages wrapped instead of cut.
"""),
    code("""
veo_nb.table(tracker.summary())
"""),
    md("""
## 5. Wait for everything to finish

You never have to wait: polling runs in the background. But a script, or the end
of a notebook, often wants every result, and `wait()` blocks until every task has
finished **and** its video is saved (so each `video_path` is set right after).

While this cell runs, the panel keeps updating. In JupyterLab 4.4+ (with
ipykernel 7.1+) its buttons answer too; in VS Code and Colab, clicks on widgets
wait until the running cell ends. That is why this blocking cell comes last, where
nothing needs clicking.
"""),
    code("""
finished = tracker.wait(timeout=600)
for task in finished:
    print(f"{task.id}  {task.status.value:<10}  {task.error or task.video_path}")
"""),
    code("""
tracker.tasks()["status"].value_counts()
"""),
    md("""
Next: `02_classroom_demo.ipynb` (a sweep across models, the gallery, timings and
failures), `03_history_analysis.ipynb` (history, success rates and export) and
`04_class_dashboard.ipynb` (a teacher's live view of a whole class).
"""),
]

# ---------------------------------------------------------------------------
CLASSROOM = [
    md("""
# Classroom demo: a prompt sweep across models

This notebook is written to be shown to a class. It submits a small *sweep* — the
same prompts across every model, both aspect ratios, and the three request
modes — then looks at the gallery, compares how long each model took, and
explains what the different kinds of failure look like.

It runs in **demo mode** on the built-in emulator unless `VEO_API_KEY` is set (see
`01_quickstart.ipynb`). With a real key the sweep is cut down to two tasks,
because every task is billed.
"""),
    code("""
import itertools
import os

import pandas as pd

import veo_nb

client = veo_nb.connect()
# On a class's JupyterHub, VEO_NB_STORE is the class's shared history (see the README)
tracker = veo_nb.Tracker(client, store=os.environ.get("VEO_NB_STORE") or "veo_nb_data/classroom.sqlite")
"""),
    md("""
## 1. The sweep as a DataFrame

One row per task. The columns are the arguments of `tracker.submit`: `prompt`,
`model`, `aspect_ratio`, `resolution`, and, for the image modes, `reference_images`
(up to 3 image URLs) or `first_image` / `last_image`. `label` is a name of our own
choosing that the panel and the DataFrames show.
"""),
    code("""
prompts = {
    "lighthouse": "A lighthouse on a cliff in a storm, waves crashing, dramatic light",
    "kitchen": "Close-up of hands kneading bread dough in a sunny kitchen",
}
models = ["veo_3_1_fast", "veo_3_1_pro", "veo_3_1_pro_stable", "veo_3_1_fast_stable"]
aspect_ratios = ["16:9", "9:16"]

rows = [
    {"label": f"{name} / {model} / {ratio}", "prompt": prompt, "model": model,
     "aspect_ratio": ratio, "resolution": "720p"}
    for (name, prompt), model, ratio in itertools.product(prompts.items(), models, aspect_ratios)
]

# The two image modes. (The emulator does not download these images; the real
# service would, so use your own URLs there.)
image = "https://example.com/images/{}.jpg"
rows += [
    {"label": "reference images / veo_3_1_pro", "model": "veo_3_1_pro",
     "prompt": "The cat from the photos playing with a ball of yarn",
     "reference_images": [image.format("cat1"), image.format("cat2")]},
    {"label": "first+last frame / veo_3_1_fast", "model": "veo_3_1_fast",
     "prompt": "Morph smoothly from the first frame to the last",
     "first_image": image.format("sunrise"), "last_image": image.format("sunset")},
]

# Two that go wrong on purpose (emulator directives; see section 4).
rows += [
    {"label": "demo: fails", "prompt": "[fail] A crowded stadium at night"},
    {"label": "demo: no video", "prompt": "[no-video] A street market in the rain"},
]

sweep = pd.DataFrame(rows)
if not client.demo:
    sweep = sweep[~sweep["label"].str.startswith("demo:")].head(2)
sweep
"""),
    code("""
submitted = tracker.submit_many(sweep)
submitted[["label", "task_id", "error"]]
"""),
    md("""
## 2. Watch it live

Every row updates by itself. Finished videos play inline; the **Gallery** tab
shows all of them side by side, and **History** lists every status change the
tracker saw.
"""),
    code("""
veo_nb.panel(tracker)
"""),
    md("""
## 3. Invalid requests are caught before anything is sent

While the sweep runs (the panel above keeps updating), a first kind of failure,
one that needs no waiting. veo_nb checks each request against the model table.
Here, `veo_3_1_fast_stable` cannot make 4K videos and takes no reference images:
you get a `ValidationError` that says what to change, and no task is created
(nothing is billed).
"""),
    code("""
for kwargs in [
    {"model": "veo_3_1_fast_stable", "resolution": "4K"},
    {"model": "veo_3_1_fast_stable", "reference_images": ["https://example.com/a.jpg"]},
    {"aspect_ratio": "4:3"},
]:
    try:
        tracker.submit("A sailing boat at sea", **kwargs)
    except veo_nb.ValidationError as exc:
        print(f"{kwargs} -> ValidationError: {exc}")
"""),
    md("""
Now wait for the sweep. `wait()` blocks until every task has finished and its
video is saved; it sits here, after the panel and the quick checks, because in VS
Code and Colab widget clicks wait until a running cell ends.
"""),
    code("""
finished = tracker.wait(timeout=900)
print(f"{len(finished)} tasks finished")
"""),
    md("""
## 4. How long did each model take?

`summary()` condenses the history per model: how many tasks, how many succeeded,
and typical times. `tasks()` has the per-task timings (`queued_s`, `processing_s`,
`total_s`, in seconds) if you want to dig further.

(In demo mode the emulator picks durations at random within the documented
2–5 minutes, scaled down — so differences between models here are chance, which is
itself a useful lesson about small samples.)
"""),
    code("""
veo_nb.table(tracker.summary())
"""),
    code("""
tasks = tracker.tasks()
times = tasks.groupby("model")["total_s"].describe()[["count", "mean", "min", "max"]]
times.round(1)
"""),
    md("""
A plot, if `matplotlib` is installed (`pip install matplotlib`); otherwise the table
above says the same.
"""),
    code("""
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: pip install matplotlib to see the plot")
else:
    ax = tasks.boxplot(column="total_s", by="model", rot=20, figsize=(8, 4))
    ax.set_title("Seconds from submit to finished, per model")
    ax.set_ylabel("seconds")
    plt.suptitle("")
    plt.show()
"""),
    md("""
## 5. What failures look like, and why

Besides invalid requests (section 3), two more ways a request can go wrong.

**a) Tasks can fail on the service.** The task was accepted, ran for a while, and
then reported `failed` with a message (a safety policy, an overloaded model, a
timeout...). The message is in the `error` column. In demo mode some tasks fail at
random, as they do on the real service, and `[fail]` forces one.

**b) Tasks can complete without a video.** The service says `completed`, but
there is no `video_url` — typically the output was blocked by a safety filter
after it was generated. There is nothing to watch, so veo_nb counts the task as
`failed` and says why in `error`. `[no-video]` forces one in demo mode.
"""),
    code("""
failed = tasks[tasks["status"] == "failed"]
veo_nb.table(failed[["label", "model", "error"]], title="Failed tasks and why")
"""),
    md("""
The history keeps what the service actually said: for a completed-without-video
task the last status event reads `completed`, with the explanation in `detail`.
"""),
    code("""
from veo_nb.tracker import NO_VIDEO_REASON

no_video_ids = tasks.loc[tasks["error"] == NO_VIDEO_REASON, "task_id"]
events = tracker.history()
veo_nb.table(events[events["task_id"].isin(no_video_ids) & (events["kind"] == "status")][
    ["task_id", "status", "observed_at", "detail"]], tasks=tasks)
"""),
]

# ---------------------------------------------------------------------------
HISTORY = [
    md("""
# History analysis

Everything the tracker sees is stored in a SQLite file, so you can analyse it with
pandas later: how long tasks took, how often they succeeded, and which status
changes happened when. This notebook:

1. makes some history to look at: in demo mode it adds a handful of tasks on the
   emulator each run (under a minute); with a real key only when the store is
   still empty, and then just one task,
2. reads it with `tasks()`, `history()` and `summary()`,
3. computes durations and success rates,
4. exports it to CSV, Parquet and JSON.

Runs in demo mode unless `VEO_API_KEY` is set (see `01_quickstart.ipynb`).
"""),
    code("""
import pandas as pd

import veo_nb

client = veo_nb.connect()
tracker = veo_nb.Tracker(client, store="veo_nb_data/history.sqlite")
"""),
    md("""
## 1. Some history to analyse

In demo mode, submit a small batch and follow it as it finishes (a line per task,
so there is something to see while it runs); each run of the notebook adds to the
same history file, so the tables below grow. With a real key this only happens
when the store is empty.
"""),
    code("""
if client.demo or tracker.tasks().empty:
    batch = pd.DataFrame({
        "prompt": [
            "A hummingbird hovering at a red flower, slow motion",
            "Waves on a pebble beach at dusk",
            "A steaming cup of coffee on a wooden table",
            "A bicycle ride through a tulip field",
            "Snow falling on a quiet village street",
            "A chameleon changing colour on a branch",
        ],
        "model": ["veo_3_1_fast", "veo_3_1_pro", "veo_3_1_fast_stable",
                  "veo_3_1_fast", "veo_3_1_pro", "veo_3_1_pro_stable"],
    })
    if not client.demo:
        batch = batch.head(1)  # real tasks are billed
    new = tracker.submit_many(batch)
    print(f"submitted {len(new)} tasks; each line below appears as one is done")
    for task in tracker.as_completed(list(new["task_id"].dropna()), timeout=900):
        print(f"  {task.id}  {task.status.value:<10} {task.error or ''}")
"""),
    md("""
## 2. Tasks, history and summary

* `tasks()` — one row per task, with its latest status and timings.
* `history()` — the event log: one row for each status change (and for poll errors
  and downloads), with the time it was observed.
* `summary()` — per model: counts, success rate and typical durations.
"""),
    code("""
tasks = tracker.tasks()
tasks.head()
"""),
    code("""
events = tracker.history()
veo_nb.table(events.tail(10), tasks=tasks, title="The newest 10 events")
"""),
    code("""
veo_nb.table(tracker.summary())
"""),
    md("""
## 3. Durations

`queued_s` is the time a task waited before processing started, `processing_s` the
time it then took, `total_s` both. (The tracker only sees changes when it polls, so
these are accurate to about one poll interval.)
"""),
    code("""
done = tasks[tasks["status"].isin(["completed", "failed"])]
done[["queued_s", "processing_s", "total_s"]].describe().round(1)
"""),
    md("""
## 4. Success rates

`summary()` above already has a `success_rate` per model (completed ÷ finished).
Here is the same computed by hand from `tasks()`, to show how. A task that the
service reported as completed but without a video (a safety filter) is counted
as `failed` by veo_nb, since there is nothing to watch.
"""),
    code("""
finished = tasks[tasks["status"].isin(["completed", "failed"])].copy()
finished["succeeded"] = finished["status"] == "completed"
rates = finished.groupby("model")["succeeded"].agg(tasks="count", succeeded="sum")
rates["success_rate"] = (rates["succeeded"] / rates["tasks"]).round(2)
rates
"""),
    md("""
How a task's status changed over time, from the event log (status events only):
"""),
    code("""
status_events = events[events["kind"] == "status"]
status_events.pivot_table(index="task_id", columns="status", values="observed_at",
                          aggfunc="first").head()
"""),
    md("""
## 5. Plots

With `matplotlib` installed (`pip install matplotlib`), pandas can plot directly.
"""),
    code("""
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: pip install matplotlib to see the plots")
else:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    done["total_s"].plot.hist(ax=left, bins=10, title="Seconds from submit to finished")
    rates["success_rate"].plot.bar(ax=right, rot=20, ylim=(0, 1), title="Success rate per model")
    plt.tight_layout()
    plt.show()
"""),
    md("""
## 6. Export

`export()` writes a table to a file; the format follows the file's extension.
CSV and JSON need nothing more; Parquet needs `pyarrow`. `what=` picks the table:
`"tasks"` (the default), `"history"` or `"summary"`.
"""),
    code("""
from pathlib import Path

out = Path("veo_nb_data/exports")
out.mkdir(parents=True, exist_ok=True)

tracker.export(out / "tasks.csv")
tracker.export(out / "tasks.json")
tracker.export(out / "history.csv", what="history")
tracker.export(out / "summary.csv", what="summary")
try:
    import pyarrow  # noqa: F401
except ImportError:
    print("pyarrow is not installed: pip install pyarrow for Parquet")
else:
    tracker.export(out / "tasks.parquet")

sorted(p.name for p in out.iterdir())
"""),
    code("""
pd.read_csv(out / "tasks.csv").head()
"""),
    md("""
## 7. The panel's History tab

The panel shows the same history interactively (open its **History** tab).
"""),
    code("""
veo_nb.panel(tracker)
"""),
]


# ---------------------------------------------------------------------------
DASHBOARD = [
    md("""
# Class dashboard

A teacher's live view of a whole class: every student's tasks, from one shared
history. Run it as an app, without the code, with
[Voilà](https://voila.readthedocs.io):

```bash
VEO_NB_STORE=postgresql://teacher@db.example:5432/veo voila notebooks/04_class_dashboard.ipynb
```

* **A class on JupyterHub** shares a PostgreSQL database: each student's notebook
  uses `veo_nb.Tracker(store="postgresql://…")` (or sets `VEO_NB_STORE`), and each
  task records its `owner` (the JupyterHub user). This dashboard reads the same
  database, with the same API key, and shows every task as the students' kernels
  poll them.
* **Without a database configured** (no `VEO_NB_STORE`) it runs in demo mode on the
  embedded emulator and store, and plays a small class itself.
"""),
    code("""
import os

import ipywidgets as widgets
import pandas as pd

import veo_nb

shared = os.environ.get("VEO_NB_STORE")
client = veo_nb.connect()
# owner: on a hub, you (VEO_NB_OWNER or JUPYTERHUB_USER); in demo mode, "teacher"
tracker = veo_nb.Tracker(client, store=shared or "veo_nb_data/class.sqlite",
                         owner=None if shared else "teacher")
print(f"class history: {tracker.store_key}")
"""),
    md("""
In demo mode, a few "students" submit a task or two each (with a real store, the
students' own notebooks do this).
"""),
    code("""
if not shared and client.demo:
    prompts = {
        "ada": ["A paper crane unfolding itself", "Rain on a tin roof, close-up"],
        "ben": ["A tiny robot watering a plant"],
        "chloe": ["Northern lights over a frozen lake", "[fail] A crowded stadium"],
        "dev": ["Time-lapse of a city waking up"],
    }
    for student, texts in prompts.items():
        for text in texts:
            tracker.submit(text, owner=student, label=f"{student}: {text[:24]}")
"""),
    md("""
## Counts per student

Updated live: every change any student's kernel records reaches this table within
about a second.
"""),
    code("""
counts = widgets.HTML(_dom_classes=("veo-class-counts",))


def count_per_student(_task=None):
    frame = tracker.tasks()
    if frame.empty:
        counts.value = "<i>No tasks yet.</i>"
        return
    table = pd.crosstab(frame["owner"].fillna("(unknown)"), frame["status"].astype(str))
    table["total"] = table.sum(axis=1)
    counts.value = veo_nb.table(table.reset_index())._repr_html_()


count_per_student()
tracker.on_change(count_per_student)
counts
"""),
    md("""
## Every task, live

The panel filters by owner and status; its **Gallery** tab shows every finished
video of the class.
"""),
    code("""
veo_nb.panel(tracker)
"""),
    md("""
## Tasks per student (a snapshot)
"""),
    code("""
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: pip install matplotlib to see the plot")
else:
    per_student = tracker.tasks().groupby("owner").size()
    ax = per_student.plot.bar(rot=0, figsize=(6, 3), title="Tasks per student")
    ax.set_ylabel("tasks")
    plt.show()
"""),
]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for kind, text in cells:
        cell = new_markdown_cell(text) if kind == "markdown" else new_code_cell(text)
        cell.pop("id", None)
        nb.cells.append(cell)
    # Stable cell ids, so regenerating gives the same file.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nb


# ---------------------------------------------------------------------------
# The quickstart in Simplified Chinese: the same cells, Chinese prose and
# prompts, and the panel in Chinese (panel(lang="zh_CN")).
QUICKSTART_ZH = [
    md("""
# veo_nb 快速入门

用 VEO 生成几段视频，并在这个笔记本里实时看着它们完成。
请选择 **运行 → 运行全部单元格**（Run → Run All Cells），下面的单元格会从上到下依次运行。

**演示模式还是真实服务？**

* **演示模式（默认）。** 没有设置 `VEO_API_KEY` 时，`veo_nb.connect()` 会在本笔记本的
  内核里启动一个 VEO 服务的*模拟器*：同样的 HTTP 接口，时钟快约 8 倍（任务 15–45 秒完成，
  而不是 2–5 分钟），视频是测试图案样片，不联网，也不产生任何费用。
* **真实服务。** 在启动 Jupyter *之前*，在环境中设置 `VEO_API_KEY`
  （例如 `export VEO_API_KEY=sk-...`），同样的单元格就会连接真实的 VEO 接口。
  这时每个任务都会计费，需要 2–5 分钟。

面板的语言：`veo_nb.panel(tracker, lang="zh_CN")` 显示中文；也可以设置环境变量
`VEO_NB_LANG=zh_CN`，或者让内核的区域设置（`LANG=zh_CN.UTF-8`）来决定。
"""),
    code("""
import veo_nb

client = veo_nb.connect()
print("演示模式（模拟器）" if client.demo else "真实的 VEO 服务")
"""),
    md("""
## 1. 跟踪器

`Tracker`（跟踪器）替你提交任务并跟进它们：它在后台查询状态（不会比服务规定的 30 秒一次更频繁），
把每次状态变化记录在一个小小的 SQLite 文件里，并在视频链接 24 小时过期之前下载每个完成的 MP4。

这个文件保存在笔记本旁边的 `veo_nb_data/` 文件夹中，所以重启内核后历史记录仍然在。
"""),
    code("""
tracker = veo_nb.Tracker(client, store="veo_nb_data/quickstart.sqlite")
tracker
"""),
    md("""
从现在起，跟踪器会自己在后台查询：不需要再运行别的代码，状态就会更新。
再次运行这个单元格（或再次 **运行全部**）不会启动第二个查询线程：同一个历史文件上的所有跟踪器共用一个。
"""),
    md("""
## 2. 提交几个提示词

`submit` 会立即返回新任务（它的 ID 和状态）；视频在服务端生成，你可以继续做别的事。

**再次运行这个单元格不会重复付费。** 使用真实密钥时，每个视频都要计费；当单元格再次运行时
（重新运行、运行全部、重启内核后运行全部），它的 submit 会返回上一次运行创建的任务，并有一行提示：
`reused vgen_… from 14:02 (same request in this cell)`。`submit(..., new=True)` 会再创建一个。
演示模式不计费，所以再次运行会创建新任务，让你再看一遍实时进度，同时那一行会说明使用真实密钥时会复用哪个任务。
"""),
    code("""
submitted = [
    tracker.submit("日出时分，一只红狐狸在新雪中小跑，电影感"),
    tracker.submit("一只纸船在下雨的街道上漂流，特写"),
    tracker.submit("云朵翻过山间湖泊的延时摄影", aspect_ratio="9:16"),
]
[(task.id, task.status.value) for task in submitted]
"""),
    md("""
在演示模式下，提示词里可以用方括号写一条指令来控制模拟器，展示不寻常的结果是什么样子：

* `[fail: <消息>]` 让任务失败，并给出这条消息，
* `[duration: <秒数>]` 设定任务用时（按真实服务的秒数计算，所以 `[duration: 400]` 在这里大约 48 秒），
* `[no-video]` 完成但没有视频，就像被安全过滤器拦下时那样。

下面这个失败的任务会返回一条**包含 HTML 和脚本**的错误消息。veo_nb 总是把服务的消息
（以及你的提示词）当作纯文本显示，从不当作 HTML：这样的标记会原样显示，既不能改变页面，也不能运行代码。

（这些提示词只会发给模拟器：使用真实密钥时，这个单元格什么也不做。）
"""),
    code("""
if client.demo:
    submitted.append(tracker.submit(
        "[fail: <b>Blocked</b> by <script>window.veoXss = 1</script> policy "
        "<img src=x onerror=\\"window.veoXss = 2\\">] 夜晚的霓虹街道"
    ))
    submitted.append(tracker.submit("[duration: 400] 无人机缓缓飞过秋天的森林"))
"""),
    md("""
## 3. 实时面板

面板会自己刷新：状态从*排队中*变为*生成中*，再变为*已完成*或*失败*，你不需要运行任何东西；
最新的任务排在最前面，每个完成的视频显示为一张卡片：点击 **▶ 播放** 观看（在你要求之前，
不会向浏览器发送任何视频）。**视频库**和**历史**标签页显示全部视频和每一条记录的事件。

面板可以完全用键盘操作：Tab 键移动焦点，Enter 或空格键按下按钮；读屏软件会读出每个任务的状态变化。

再次显示面板（重新运行单元格，或运行全部）会替换之前的面板，旧面板的输出会说明这一点：
每份历史记录只有一个实时面板。
"""),
    code("""
veo_nb.panel(tracker, lang="zh_CN")
"""),
    md("""
## 4. 把结果作为 DataFrame

`tasks()` 为每个任务返回一行：提示词、模型、状态、用时、错误消息，以及下载的 MP4 的路径。
它是一个快照：再次运行单元格可以看到状态的变化（上面的面板会实时显示）。
"""),
    code("""
df = tracker.tasks()
df[["label", "prompt", "status", "total_s", "video_path"]]
"""),
    md("""
`veo_nb.table()` 把这些表格显示得便于阅读：本地时间精确到秒，数字取整，没有 `<NA>`，
较长的消息会换行而不是被截断；表头和状态使用面板的语言。
"""),
    code("""
veo_nb.table(tracker.summary())
"""),
    md("""
## 5. 等待全部完成

你从来不必等待：查询在后台进行。但脚本或笔记本的结尾常常需要所有结果，
`wait()` 会一直等到每个任务都结束**并且**视频已保存（所以之后每个 `video_path` 都有值）。

这个单元格运行时，面板会继续更新。在 JupyterLab 4.4+（配合 ipykernel 7.1+）中，面板的按钮也能响应；
在 VS Code 和 Colab 中，点击控件要等正在运行的单元格结束后才会处理。所以这个会阻塞的单元格放在最后，
那时已经不需要点击任何东西了。
"""),
    code("""
finished = tracker.wait(timeout=600)
for task in finished:
    print(f"{task.id}  {task.status.value:<10}  {task.error or task.video_path}")
"""),
    code("""
tracker.tasks()["status"].value_counts()
"""),
    md("""
接下来：`../02_classroom_demo.ipynb`（跨模型的批量提示词、视频库、用时和失败），
`../03_history_analysis.ipynb`（历史、成功率和导出）以及
`../04_class_dashboard.ipynb`（教师查看全班的实时视图）。这几个笔记本目前是英文的；
在其中调用 `veo_nb.set_language("zh_CN")` 即可让面板和表格显示中文。
"""),
]


NOTEBOOK_CELLS = {
    "01_quickstart.ipynb": QUICKSTART,
    "zh/01_quickstart.ipynb": QUICKSTART_ZH,
    "02_classroom_demo.ipynb": CLASSROOM,
    "03_history_analysis.ipynb": HISTORY,
    "04_class_dashboard.ipynb": DASHBOARD,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a notebook differs from what would be written")
    args = parser.parse_args(argv)
    NOTEBOOKS.mkdir(exist_ok=True)
    stale = []
    for name, cells in NOTEBOOK_CELLS.items():
        text = nbformat.writes(build(cells)) + "\n"
        path = NOTEBOOKS / name
        path.parent.mkdir(exist_ok=True)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run scripts/make_notebooks.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
