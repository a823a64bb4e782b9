"""The notebooks under nbval: every notebook runs in `make test` with `pytest --nbval-lax` on the smoke profile, and the
cells marked NBVAL_CHECK_OUTPUT must print what the notebook stores for them.

A marked cell's output may depend neither on the machine nor on the profile (smoke or default): the model's shape,
the question templates and their split, a closed form. Everything else is only run (it must not raise). Timings,
paths and hashes are masked by tests/nbval_sanitize.cfg before comparing.

    python -m rlcp_utils.study.checked_outputs DIR   # store the marked cells' outputs from executed notebooks in DIR
                                                      # (for example outputs/smoke/notebooks after make reproduce
                                                      # PROFILE=smoke), after changing a marked cell on purpose

tests/test_smoke.py prepares the notebooks (`prepare`: papermill injects the profile and keeps the stored outputs),
runs `nbval_command` on them, then checks what they wrote.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat
import papermill as pm

from rlcp_utils.core.config import REPO_ROOT
from rlcp_utils.study.staleness import study_notebooks

MARKER = "NBVAL_CHECK_OUTPUT"
SANITIZE = REPO_ROOT / "tests" / "nbval_sanitize.cfg"


def marked_cells(nb) -> list:
    """The code cells whose output nbval compares (the marker in their source)."""
    return [c for c in nb.cells if c.cell_type == "code" and MARKER in c.source]


def adopt(executed_dir: Path, notebooks: list[Path] | None = None) -> list[str]:
    """Store, in each study notebook (.ipynb), the outputs its marked cells produced in the executed copy of the same
    notebook in `executed_dir` (cells matched by their source). Returns the notebooks that changed."""
    changed = []
    for path in notebooks or study_notebooks():
        nb = nbformat.read(path, as_version=4)
        marked = marked_cells(nb)
        executed = executed_dir / path.name
        if not marked or not executed.exists():
            continue
        ran = {c.source: c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"}
        for cell in marked:
            if cell.source not in ran:
                raise ValueError(f"{executed} has no cell with the source of {path.name}'s marked cell "
                                 f"{cell.source.splitlines()[0]!r}: run the current notebook first")
            outputs = [o for o in ran[cell.source].outputs if not (o.output_type == "stream" and o.name == "stderr")]
            for o in outputs:
                if "execution_count" in o:
                    o.execution_count = 1
            if outputs != cell.outputs or cell.execution_count != 1:
                # nbval compares only the cells that ran in the stored notebook (an execution count)
                cell.outputs, cell.execution_count = outputs, 1
                if path.name not in changed:
                    changed.append(path.name)
        if path.name in changed:  # a notebook whose stored outputs already agree is left as it is
            nbformat.write(nb, path)
    return sorted(changed)


def prepare(dest: Path, profile: str) -> list[Path]:
    """Copies of the study notebooks in `dest` with `profile` injected (papermill --prepare-only: the stored outputs
    of the marked cells stay), in the study's order."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for nb in study_notebooks():
        pm.execute_notebook(str(nb), str(dest / nb.name), parameters={"profile": profile}, prepare_only=True,
                            kernel_name="python3", language="python", progress_bar=False)
        out.append(dest / nb.name)
    return out


def nbval_command(paths: list[Path], cell_timeout_s: int = 1200) -> list[str]:
    """pytest with nbval in lax mode on these notebooks, in this Python environment, with the sanitize file; this
    module is loaded as a plugin, so with EXECUTED_ENV set the executed notebooks are written there."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", __name__, "-q", "-rfE", "--nbval-lax",
            "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", str(cell_timeout_s),
            *map(str, paths)]


# --- a pytest plugin for the nbval run: keep what each cell printed, and write the executed notebooks ----------

EXECUTED_ENV = "RLCP_EXECUTED_DIR"
_executed: dict[str, object] = {}


def pytest_runtest_teardown(item) -> None:
    """After nbval ran (and compared) a cell, put the outputs it received into the notebook it read (nbval 0.11 keeps
    them in `test_outputs`), so the notebook can be written as executed."""
    cell, received = getattr(item, "cell", None), getattr(item, "test_outputs", None)
    if os.environ.get(EXECUTED_ENV) and cell is not None and received is not None:
        cell.outputs = received
        _executed[str(item.parent.path)] = item.parent.nb


def pytest_sessionfinish(session) -> None:
    folder = os.environ.get(EXECUTED_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for path, nb in _executed.items():
            nbformat.write(nb, Path(folder) / Path(path).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("executed", type=Path, help="a folder of executed notebooks (outputs/<profile>/notebooks)")
    args = ap.parse_args(argv)
    changed = adopt(args.executed)
    print("stored the marked cells' outputs of " + (", ".join(changed) if changed else "no notebook (they agree)")
          + ("; run `make notebooks` to keep the .py twins in step" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
