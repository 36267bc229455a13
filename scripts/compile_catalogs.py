"""The message catalogs of veo_nb (see veo_nb/_i18n.py): find the texts the
code marks with _() and N_(), keep each language's .po in step, and compile
each .po to the .mo that Python's gettext reads at run time.

    .venv/bin/python scripts/compile_catalogs.py --update  # add new texts to every .po
    .venv/bin/python scripts/compile_catalogs.py           # write the .mo files
    .venv/bin/python scripts/compile_catalogs.py --check   # exit 1 if a .mo is stale

The .mo files are committed (the package needs no tool at run time);
Babel (a dev dependency, already JupyterLab's) reads and writes the files.
tests/test_i18n.py fails when a .mo differs from its .po.
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "veo_nb"
LOCALE = PACKAGE / "locale"
DOMAIN = "veo_nb"
MARKERS = ("_", "N_")


def marked_texts(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Each literal text passed to _() or N_() in the package -> where it is."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in MARKERS and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(node.args[0].value, []).append(where)
    return found


def po_paths() -> list[Path]:
    return sorted(LOCALE.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def read(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def compiled(po: Path) -> bytes:
    """The .mo of ``po``."""
    out = io.BytesIO()
    write_mo(out, read(po), use_fuzzy=False)
    return out.getvalue()


def update() -> None:
    """Add the texts the code marks to every .po (untranslated), and drop the
    ones it no longer uses."""
    texts = marked_texts()
    for po in po_paths():
        old = read(po)
        new = Catalog(locale=old.locale, domain=DOMAIN, project="veo_nb", version="",
                      header_comment=old.header_comment, fuzzy=False,
                      creation_date=old.creation_date, revision_date=old.revision_date,
                      last_translator=old.last_translator, language_team=old.language_team)
        for text, where in texts.items():
            kept = old.get(text)
            new.add(text, kept.string if kept else "",
                    locations=[(w.rsplit(":", 1)[0], int(w.rsplit(":", 1)[1])) for w in where])
        with po.open("wb") as f:  # files without line numbers: edits elsewhere change nothing
            write_po(f, new, width=100, omit_header=False, sort_output=False, include_lineno=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="add new texts to every .po")
    parser.add_argument("--check", action="store_true", help="exit 1 if a .mo is stale")
    args = parser.parse_args(argv)
    if args.update:
        update()
        return 0
    stale = []
    for po in po_paths():
        mo = po.with_suffix(".mo")
        data = compiled(po)
        if args.check:
            if not mo.exists() or mo.read_bytes() != data:
                stale.append(str(mo.relative_to(ROOT)))
        else:
            mo.write_bytes(data)
    if stale:
        print("stale, run scripts/compile_catalogs.py:", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
