"""The papermill runner: failing cells are named, finished notebooks are not rerun, outputs are atomic."""

import json

import nbformat
import pytest

from rlcp_utils import pipeline


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def study(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    return notebooks, tmp_path / "outputs" / "smoke"


def test_failure_names_the_cell_and_a_rerun_resumes(study, capsys):
    notebooks, out = study
    _notebook(notebooks / "01_first.ipynb", "print('first ran', profile)")
    _notebook(notebooks / "02_second.ipynb", "x = 1\nraise ZeroDivisionError('boom in second')")
    with pytest.raises(SystemExit) as err:
        pipeline.main(["--profile", "smoke"])
    message = str(err.value)
    assert "02_second.ipynb failed in cell 2" in message and "ZeroDivisionError: boom in second" in message
    assert "raise ZeroDivisionError" in message  # the cell's source is shown
    assert (out / "notebooks" / "01_first.ipynb").exists()
    assert (out / "notebooks" / "02_second.failed.ipynb").exists()
    assert not (out / "notebooks" / "02_second.ipynb").exists()  # never a half-finished notebook under the final name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notebooks"]["01_first"]["status"] == "ok"
    assert manifest["notebooks"]["02_second"]["status"] == "failed"
    executed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert "first ran smoke" in json.dumps(executed.cells[-1].outputs)  # the profile was injected

    _notebook(notebooks / "02_second.ipynb", "print('fixed')")
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "01_first: already done with these parameters, skipped" in log and "02_second: finished" in log
    assert not (out / "notebooks" / "02_second.failed.ipynb").exists()

    # an edited notebook is rerun, and so is every notebook after it (they read what it wrote)
    _notebook(notebooks / "01_first.ipynb", "print('first, edited')")
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "01_first: finished" in log and "02_second: finished" in log
    # --only picks notebooks
    assert pipeline.main(["--profile", "smoke", "--only", "02_second"]) == 0
    log = capsys.readouterr().out
    assert "02_second: already done" in log and "01_first" not in log


def test_bad_profile_and_unknown_notebook_stop_before_running(study, capsys, tmp_path):
    notebooks, _ = study
    _notebook(notebooks / "01_first.ipynb", "print(1)")
    assert pipeline.main(["--profile", "nope"]) == 2
    assert "no profile 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: default\nepochs: -3\n")
    assert pipeline.main(["--profile", str(bad)]) == 2
    assert "'epochs'" in capsys.readouterr().err
    assert pipeline.main(["--profile", "smoke", "--only", "99_nothing"]) == 2
    assert "unknown notebook" in capsys.readouterr().err


def test_missing_checkpoints_rerun_training_only_when_a_later_notebook_runs(study, capsys):
    # fresh clone: executed notebooks and manifest are committed, checkpoints are not
    notebooks, out = study
    _notebook(notebooks / "02_baselines.ipynb", "print('trains the baselines')")
    _notebook(notebooks / "04_probing.ipynb", "print('loads the trained baselines')")
    assert pipeline.main(["--profile", "smoke"]) == 0
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke"]) == 0  # everything done: nothing to load, nothing reruns
    assert capsys.readouterr().out.count("already done") == 2
    _notebook(notebooks / "04_probing.ipynb", "print('loads the trained baselines, edited')")
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "02_baselines: done, but its checkpoints" in log and "02_baselines: finished" in log and "04_probing: finished" in log
    for arm in ["just_rag", "unlikelihood"]:
        (out / "checkpoints" / arm).mkdir(parents=True)
        (out / "checkpoints" / arm / "checkpoint.json").write_text("{}")
    _notebook(notebooks / "04_probing.ipynb", "print('edited again')")
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "02_baselines: already done" in log and "04_probing: finished" in log
