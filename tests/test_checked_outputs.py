"""nbval as `make test` runs it (checked_outputs.nbval_command): it fails when a cell raises or when a marked cell's
output changes, and passes on changed timings and paths (the sanitize file) and on unmarked cells."""

import subprocess

import jupytext
import nbformat
import pytest

from rlcp_utils.study import checked_outputs
from rlcp_utils.study.staleness import study_notebooks


def _notebook(path, source: str, stored: str):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    cell.execution_count = 1  # nbval compares only cells that ran in the stored notebook
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_nbval_fails_on_a_raising_cell_and_a_changed_marked_output_only(tmp_path):
    mark = f"# {checked_outputs.MARKER}\n"
    cases = {
        "same_after_sanitizing": _notebook(tmp_path / "a.ipynb", mark + 'print("built in 1.5 s in /tmp/run7/out, 3d2e1f0a9b8c7d6e")',
                                           "built in 12 min in /home/someone/rlcp/out, 0123456789abcdef\n"),
        "changed_marked": _notebook(tmp_path / "b.ipynb", mark + 'print("15 targets")', "14 targets\n"),
        "changed_unmarked": _notebook(tmp_path / "c.ipynb", 'print("15 targets")', "14 targets\n"),
        "raises": _notebook(tmp_path / "d.ipynb", "1 / 0", ""),
    }
    run = subprocess.run(checked_outputs.nbval_command(list(cases.values())), cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stdout[-3000:]
    # pytest -q's progress line: one character per collected cell, in the order of the notebooks given ('.' passed)
    progress = run.stdout.split()[0]
    assert len(progress) == len(cases), run.stdout[-3000:]
    outcome = {name: mark != "." for name, mark in zip(cases, progress)}
    assert outcome == {"same_after_sanitizing": False, "changed_marked": True, "changed_unmarked": False, "raises": True}, run.stdout[-3000:]


@pytest.mark.parametrize("path", study_notebooks(), ids=lambda p: p.stem)
def test_every_marked_cell_stores_its_expected_output(path):
    nb = nbformat.read(path, as_version=4)
    for cell in checked_outputs.marked_cells(nb):
        assert cell.outputs, (f"{path.name}: the marked cell {cell.source.splitlines()[1]!r} stores no output; run the "
                              "notebook on smoke and `python -m rlcp_utils.study.checked_outputs outputs/smoke/notebooks`")
    # the .py twin marks the same cells (jupytext keeps the marker comment in the source)
    twin = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in checked_outputs.marked_cells(twin)] == [c.source for c in checked_outputs.marked_cells(nb)]


def test_some_notebooks_have_checked_outputs():
    assert sum(len(checked_outputs.marked_cells(nbformat.read(p, as_version=4))) for p in study_notebooks()) >= 3
