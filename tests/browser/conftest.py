"""Fixtures of the real-browser tests: Chromium through Playwright, and a
JupyterLab server on a temporary copy of ``notebooks/``.

When no Chromium is installed the tests are skipped on a laptop (with a
message saying how to get one) but FAIL under CI (``CI=true``): a CI run
that silently skipped the browser tests would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers sit next to this file; make them importable whatever pytest's
# import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jlab_helpers import CHROMIUM_ARGS, LabServer, chromium_path, start_lab  # noqa: E402

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
    path = chromium_path()
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
def browser(chromium_executable: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: object, lab: LabServer) -> Iterator[object]:
    """A fresh browser context on the session's JupyterLab; the kernels a test
    started are shut down after it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    context.set_default_timeout(60_000)
    pg = context.new_page()
    pg.console_messages = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.console_messages.append(f"{m.type}: {m.text}"))  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]

    def on_dialog(d: object) -> None:
        pg.dialogs.append(d.message)  # type: ignore[attr-defined]
        d.dismiss()  # type: ignore[attr-defined]

    pg.on("dialog", on_dialog)
    try:
        yield pg
    finally:
        context.close()
        lab.shutdown_kernels()


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
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = start_lab(lab_root, tmp_path_factory.mktemp("lab_env"))
    try:
        yield server
    finally:
        server.stop()
