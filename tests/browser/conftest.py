"""Fixtures of the real-browser tests: Chromium through Playwright, and
throw-away servers: one JupyterLab for the session (on a temporary copy of
``notebooks/``), one Notebook 7 and one Voilà per module that asks for them
(each on an empty temporary folder the tests write their notebooks into).

When no Chromium is installed the tests are skipped on a laptop (with a
message saying how to get one) but FAIL under CI (``CI=true``): a CI run
that silently skipped the browser tests would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The helpers sit next to this file; make them importable whatever pytest's
# import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import chromium  # noqa: E402
from servers import Server, start_lab, start_notebook, start_voila  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = chromium.chromium_path()
    if path is None:
        message = (
            "no Chromium found at /usr/bin/chromium (or $VEO_NB_CHROMIUM): "
            "install it with `apt-get install -y chromium` to run the browser tests"
        )
        if _in_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        if _in_ci():
            pytest.fail(f"CI=true but playwright is not importable: {exc}", pytrace=False)
        pytest.skip(f"playwright is not installed ({exc}); pip install -e '.[dev]'")
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = chromium.launch(pw, chromium_executable)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(server, width=..., height=..., device_scale_factor=...)``:
    a fresh page (see :func:`chromium.new_page`). After the test its context
    is closed and the kernels it used are shut down (a tracker in a kernel
    keeps polling)."""
    made: list[tuple[Any, Server]] = []

    def make(server: Server, **options: Any) -> Any:
        page = chromium.new_page(browser, **options)
        made.append((page, server))
        return page

    try:
        yield make
    finally:
        for page, server in made:
            ids = list(page.kernel_ids)
            page.context.close()
            server.shutdown_kernels(ids)


@pytest.fixture()
def page(open_page: Callable[..., Any], lab: Server) -> Any:
    """A fresh page on the session's JupyterLab."""
    return open_page(lab)


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of notebooks/, so no data lands in the repository."""
    root = tmp_path_factory.mktemp("lab_root")
    if NOTEBOOKS.is_dir():
        for nb in NOTEBOOKS.glob("*.ipynb"):
            shutil.copy2(nb, root / nb.name)
    return root


@pytest.fixture(scope="session")
def lab(chromium_executable: str, lab_root: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_lab(lab_root, tmp_path_factory.mktemp("lab_env"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def notebook7(chromium_executable: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Notebook 7 (``jupyter notebook``) on an empty temporary folder."""
    server = start_notebook(tmp_path_factory.mktemp("nb7_root"),
                            tmp_path_factory.mktemp("nb7_env"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def voila(chromium_executable: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Voilà on an empty temporary folder: each notebook written there is at
    ``voila.notebook_url(relpath)`` (``/voila/render/…``)."""
    server = start_voila(tmp_path_factory.mktemp("voila_root"),
                         tmp_path_factory.mktemp("voila_env"))
    try:
        yield server
    finally:
        server.stop()
