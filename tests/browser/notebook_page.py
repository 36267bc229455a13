"""What a person does with a notebook in the browser, in JupyterLab,
Notebook 7 and Voilà: open it, wait for its kernel, Run All from the menu;
and what a test does besides: write a small notebook, run code in the
notebook's kernel without a cell and read what it printed, find the
kernel's id.

JupyterLab and Notebook 7 share the same page parts (``.jp-Notebook``,
the lumino menu bar) and expose ``window.jupyterapp`` on the servers of
:mod:`servers`; Voilà runs every cell before its page shows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat

from servers import Server, wait_for

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

#: JS: the notebook panel open on ``path`` (the current one when there is
#: no path or no match), or null.
_JS_NOTEBOOK = """(path) => {
    const app = window.jupyterapp;
    if (!app) return null;
    try {
        for (const w of app.shell.widgets('main')) {
            if (w.context && w.context.path === path && w.sessionContext) return w;
        }
    } catch (e) { /* a shell without widgets() */ }
    const w = app.shell.currentWidget;
    return w && w.sessionContext ? w : null;
}"""

JS_KERNEL_STATE = f"""(path) => {{
    const w = ({_JS_NOTEBOOK})(path);
    const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
    return k ? {{id: k.id, status: k.status, connection: k.connectionStatus}} : null;
}}"""

JS_EXECUTE = f"""async ([path, code]) => {{
    // Run code in the notebook's kernel without a cell; return what it printed.
    const w = ({_JS_NOTEBOOK})(path);
    const future = w.sessionContext.session.kernel.requestExecute({{code, silent: false,
                                                                   store_history: false}});
    let out = '';
    future.onIOPub = (msg) => {{
        const c = msg.content;
        if (msg.header.msg_type === 'stream') out += c.text;
        if (msg.header.msg_type === 'error') out += 'ERROR ' + c.ename + ': ' + c.evalue;
    }};
    await future.done;
    return out;
}}"""


def write_notebook(path: Path, *cells: str) -> Path:
    """A notebook of code ``cells`` at ``path`` (folders made), with the
    python3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def kernel_state(page: Any, relpath: str = "") -> dict[str, str] | None:
    """``{id, status, connection}`` of the kernel of the notebook ``relpath``
    (JupyterLab, Notebook 7), or None while there is none."""
    return page.evaluate(JS_KERNEL_STATE, relpath)


def wait_kernel_idle(page: Any, relpath: str = "", *, timeout: float = 120) -> str:
    """Wait until the notebook's kernel exists, is connected and idle; return its id.

    ("Run All" right after opening is flaky otherwise: the toolbar's
    indicator reads idle before a kernel exists.)"""
    def idle() -> str | None:
        state = kernel_state(page, relpath)
        if state and state["status"] == "idle" and state["connection"] == "connected":
            return state["id"]
        return None

    return wait_for(idle, timeout=timeout, interval=0.3,
                    what=f"the kernel of {relpath or 'the notebook'} to be idle")


def open_notebook(page: Any, server: Server, relpath: str, *, timeout: float = 120) -> None:
    """Open ``relpath`` as a person would on ``server``. JupyterLab and
    Notebook 7: wait until its kernel is idle. Voilà: wait until the page
    is there (Voilà ran every cell before sending it)."""
    page.goto(server.notebook_url(relpath), wait_until="domcontentloaded",
              timeout=timeout * 1000)
    if server.kind == "voila":
        page.wait_for_load_state("load", timeout=timeout * 1000)
        return
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    wait_kernel_idle(page, relpath, timeout=timeout)


def run_all_via_menu(page: Any) -> None:
    """Run every cell through the Run menu, as a person would (JupyterLab
    and Notebook 7: "Run", then "Run All Cells")."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").filter(
        has_text=re.compile(r"^Run$")).first.click(timeout=30_000)
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click(
        timeout=30_000)


def restart_kernel_via_menu(page: Any) -> None:
    """Kernel > Restart Kernel…, then Restart in the dialog (JupyterLab and
    Notebook 7), as a person would. (A restart through the REST API alone
    leaves JupyterLab's status at "Starting": the page never hears that the
    new kernel is idle.)"""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).first.click(
        timeout=30_000)
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Restart Kernel…$")).first.click(
        timeout=30_000)
    page.locator(".jp-Dialog-button.jp-mod-accept", has_text="Restart").first.click(
        timeout=30_000)


def open_and_run_all(page: Any, server: Server, relpath: str, *, timeout: float = 120) -> None:
    """Open ``relpath`` and run all of it (in Voilà, opening runs it)."""
    open_notebook(page, server, relpath, timeout=timeout)
    if server.kind != "voila":
        run_all_via_menu(page)


def execute(page: Any, code: str, relpath: str = "") -> str:
    """Run ``code`` in the notebook's kernel without a cell (JupyterLab,
    Notebook 7) and return what it printed. While a cell runs, it waits."""
    return page.evaluate(JS_EXECUTE, [relpath, code])


#: JS: cell ``i`` (0-based) of the notebook. JupyterLab 4 renders a long
#: notebook as a window over its cells: a cell scrolled out of view is not in
#: the page (a panel that grows pushes the last cell out), and the rendered
#: ones are not numbered from 0. So the cell is found by its index in the
#: notebook, after scrolling to it when it is not rendered.
JS_CELL = """(i) => {
    const find = () => document.querySelector(
        `.jp-Notebook .jp-Cell[data-windowed-list-index="${i}"]`)
        || (document.querySelector('.jp-Notebook .jp-Cell[data-windowed-list-index]')
            ? null : document.querySelectorAll('.jp-Notebook .jp-Cell')[i]);
    let cell = find();
    if (!cell) {
        const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
        if (outer) { outer.scrollTop = outer.scrollHeight; }
    }
    return find();
}"""


def cell_output(page: Any, index: int) -> str:
    """The text cell ``index`` (0-based) shows as its output (for messages
    when a test fails)."""
    return page.evaluate(
        f"""(i) => {{
            const cell = ({JS_CELL})(i);
            const out = cell && cell.querySelector('.jp-OutputArea');
            return out ? out.innerText : '';
        }}""", index)


def cell_busy(page: Any, index: int) -> bool:
    """True while cell ``index`` (0-based) shows ``[*]`` (queued or running)."""
    for _ in range(40):  # a cell scrolled back into view renders in a frame or two
        state = page.evaluate(
            f"""(i) => {{
                const cell = ({JS_CELL})(i);
                const prompt = cell && cell.querySelector('.jp-InputPrompt');
                // a cell just scrolled back in shows an empty prompt for a moment
                return prompt && prompt.innerText.trim() ? prompt.innerText.includes('*') : null;
            }}""", index)
        if state is not None:
            return bool(state)
        page.wait_for_timeout(50)
    return False
