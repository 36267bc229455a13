"""mkdocs hooks (mkdocs.yml ``hooks:``): the pages that live outside docs/.

- the README is the home page (``index.md``), its ``docs/`` links made
  relative to the site;
- the notebooks of ``notebooks/`` (translations in ``notebooks/<lang>/``
  too) are pages at ``notebooks/...``, rendered by mkdocs-jupyter;
- the reference must document exactly ``veo_nb.__all__``: a public name
  without its ``::: veo_nb.NAME`` directive, or a directive for a name that is
  not public, is a warning, so ``mkdocs build --strict`` fails.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.veo_nb")

REPO = Path(__file__).resolve().parents[1]
#: ``::: veo_nb.NAME`` on a line of its own: a mkdocstrings directive.
DIRECTIVE = re.compile(r"^:::\s+veo_nb\.(\w+)\s*$", re.MULTILINE)
#: A Markdown link or image to a repository path under docs/.
DOCS_LINK = re.compile(r"(\]\()docs/")

_documented: list[str] = []


def notebooks() -> list[Path]:
    """The notebooks of the site, as tests/test_notebooks.py finds them."""
    return sorted(p for p in (REPO / "notebooks").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "veo_nb_data" not in p.parts)


# Before mkdocs-jupyter's on_files (priority 0), which claims the .ipynb files.
@event_priority(100)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=DOCS_LINK.sub(r"\1", readme)))
    for path in notebooks():
        # A File read from the repository root, not File.generated(): mkdocs-jupyter's
        # wrapper reads the source through src_dir, which a generated file lacks.
        files.append(File(path.relative_to(REPO).as_posix(), src_dir=str(REPO),
                          dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def on_pre_build(config: MkDocsConfig) -> None:
    _documented.clear()


def on_page_markdown(markdown: str, page: Page, **kwargs: Any) -> str:
    _documented.extend(DIRECTIVE.findall(markdown))
    return markdown


def on_post_build(config: MkDocsConfig) -> None:
    import veo_nb

    public = list(veo_nb.__all__)
    undocumented = [n for n in public if n not in _documented]
    unknown = [n for n in _documented if n not in public]
    twice = sorted({n for n in _documented if _documented.count(n) > 1})
    if undocumented:
        log.warning("veo_nb.__all__ names without a '::: veo_nb.NAME' in docs/reference/: %s",
                    ", ".join(undocumented))
    if unknown:
        log.warning("'::: veo_nb.NAME' for names not in veo_nb.__all__: %s", ", ".join(unknown))
    if twice:
        log.warning("names documented more than once in docs/reference/: %s", ", ".join(twice))
