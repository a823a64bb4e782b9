"""Which code computed a result: the source files of rlcp_utils that a job or a notebook runs, and their hash.

The closure of a module is found statically (the `rlcp_utils` imports of each file, followed transitively), so
a change to any function that a job can reach changes the job's key, and a change elsewhere (the report, the
bench) leaves it alone. Every job.json and every notebook's manifest entry records `code_sha256`; the
pipeline reruns what other code computed and names the files that changed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PACKAGE = PACKAGE_DIR.name  # rlcp_utils
_IMPORT_LINE = re.compile(rf"^\s*(?:from\s+({PACKAGE}(?:\.\w+)*)\s+import\s+([^#\n]+)|import\s+({PACKAGE}(?:\.\w+)*))", re.M)


def _module_file(module: str, root: Path | None = None) -> Path | None:
    """The file of a dotted module name under the package (a module or a subpackage's __init__)."""
    root = root or PACKAGE_DIR
    parts = module.split(".")[1:]
    if not parts:
        return root / "__init__.py" if (root / "__init__.py").is_file() else None
    rel = Path(*parts)
    for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, root: Path | None = None) -> set[str]:
    """The package modules a piece of source imports (`from rlcp_utils.x import y` counts y when y is a
    module of x, else x itself). The package imports itself by absolute names only (a test checks it)."""
    return set(_imported_modules(source, root or PACKAGE_DIR))


@functools.lru_cache(maxsize=None)
def _imported_modules(source: str, root: Path) -> frozenset[str]:
    # remembered by the source itself: a job key hashes the closure of its code dozens of times per notebook, and
    # parsing every file again each time took seconds
    found: set[str] = set()
    try:
        tree = ast.parse(source)
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        pairs = []
        for n in nodes:
            if isinstance(n, ast.Import):
                pairs += [(a.name, []) for a in n.names]
            elif n.module and n.level == 0:
                pairs.append((n.module, [a.name for a in n.names]))
    except SyntaxError:  # notebook source with IPython magics: fall back to the import lines
        pairs = [(m.group(1) or m.group(3), [x.split(" as ")[0].strip(" ()") for x in (m.group(2) or "").split(",")])
                 for m in _IMPORT_LINE.finditer(source)]
    for module, names in pairs:
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            continue
        subs = [f"{module}.{name}" for name in names if _module_file(f"{module}.{name}", root)]
        found.update(subs or [module])
    return frozenset(found)


def _closure(modules: tuple[str, ...], root: Path) -> tuple[Path, ...]:
    todo, seen = list(modules), {}
    while todo:
        module = todo.pop()
        path = _module_file(module, root)
        if path is None:
            raise ValueError(f"{module} is not a module of {PACKAGE} (looked under {root})")
        if path in seen.values():
            continue
        seen[module] = path
        parts = module.split(".")
        for k in range(2, len(parts)):  # a subpackage's __init__ runs before its modules
            todo.append(".".join(parts[:k]))
        todo += sorted(imported_modules(path.read_text(), root))
    init = _module_file(PACKAGE, root)  # the package's own __init__ runs first in every import
    files = set(seen.values()) | ({init} if init else set())
    return tuple(sorted(files))


def closure_files(modules: list[str], root: Path | None = None) -> list[Path]:
    """Every package file that importing `modules` runs, sorted."""
    return list(_closure(tuple(sorted(modules)), root or PACKAGE_DIR))


def file_hashes(modules: list[str], root: Path | None = None) -> dict[str, str]:
    """{path relative to the package: sha256 of its bytes (16 hex)} over the closure of `modules`."""
    root = root or PACKAGE_DIR
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in closure_files(modules, root)}


def digest(hashes: dict[str, str]) -> str:
    """One hash (16 hex) of a {file: hash} map."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


# How a notebook runs and records (profile loading, output files, progress lines, peak memory, this hashing), never
# what a number is: the keys of training jobs and cached analyses leave these files out, so a change to them reruns
# notebooks (their manifest entries hash everything they import) but retrains and recomputes nothing. training/jobs.py
# keeps the same set as its NOT_JOB_CODE (a test checks they agree): moving it here would change jobs.py, which every
# job runs, and so every job's key.
NOT_COMPUTING_CODE = frozenset({"core/config.py", "core/notebook.py", "core/outputs.py", "core/codehash.py", "core/progress.py"})


def computing_code_sha256(modules: list[str], root: Path | None = None) -> str:
    """One hash of the code that `modules` run, without NOT_COMPUTING_CODE: the part of a cached result's key that
    ties it to the code that computes it."""
    return digest({f: h for f, h in file_hashes(modules, root).items() if f not in NOT_COMPUTING_CODE})


def changed_files(recorded: dict[str, str] | None, current: dict[str, str]) -> list[str]:
    """The files whose hash differs between a recorded and the current closure (added and removed too)."""
    recorded = recorded or {}
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


def code_cells(notebook: Path) -> list[str]:
    """The source of a notebook's code cells (.ipynb), in order: what it runs, without its prose."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    return ["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"]
