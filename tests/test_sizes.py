"""Issue #22: no class over 400 lines, no module over 600, anywhere in
``veo_nb/`` (each file one job). Measured with :mod:`ast`: a class from its
first decorator to its last line, a module by its lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600

def oversized(package: Path, root: Path) -> dict[str, list[str]]:
    """Every module under ``package`` (by its path relative to ``root``)
    that is, or holds a class that is, over the limits: what is too big."""
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        problems = []
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"module has {lines} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = (node.end_lineno or node.lineno) - first + 1
                if size > MAX_CLASS_LINES:
                    problems.append(f"class {node.name} (line {first}) has {size} lines "
                                    f"(max {MAX_CLASS_LINES})")
        if problems:
            found[path.relative_to(root).as_posix()] = problems
    return found


def test_no_class_or_module_is_too_big() -> None:
    found = oversized(ROOT / "veo_nb", ROOT)
    offenders = [f"{path}: {problem}" for path, problems in found.items()
                 for problem in problems]
    assert not offenders, "split these (#22):\n" + "\n".join(offenders)


def test_a_big_module_or_class_is_named(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_CLASS_LINES - 1))
    # at the limits: 400 lines of class, 600 of module
    rest = "x = 1\n" * (MAX_MODULE_LINES - MAX_CLASS_LINES)
    (package / "fits.py").write_text("class Fits:\n" + body + rest)
    # one line over each: the decorator counts, nested classes are found
    (package / "sub" / "big_class.py").write_text("class Outer:\n    @decorated\n    class Big:\n"
                                                  + body.replace("    ", "        "))
    (package / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized(package, tmp_path) == {
        "pkg/long.py": [f"module has {MAX_MODULE_LINES + 1} lines (max {MAX_MODULE_LINES})"],
        "pkg/sub/big_class.py": [
            f"class Outer (line 1) has {MAX_CLASS_LINES + 2} lines (max {MAX_CLASS_LINES})",
            f"class Big (line 2) has {MAX_CLASS_LINES + 1} lines (max {MAX_CLASS_LINES})",
        ],
    }
