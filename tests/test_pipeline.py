"""The papermill runner: failing cells are named, finished notebooks are not rerun, outputs are atomic."""

import json

import nbformat
import pytest

from rlcp_utils.core import outputs
from rlcp_utils.study import pipeline, staleness
from rlcp_utils.core.config import load_profile


def _notebook(path, body: str, reads: str = ""):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "default"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}\n\nReads: {reads}" if reads else f"# {path.stem}"),
                params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def study(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", notebooks)  # where the kernels run
    monkeypatch.setattr(staleness, "NOTEBOOK_DIR", notebooks)  # which notebooks the study has
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    return notebooks, tmp_path / "outputs" / "smoke"


def test_failure_names_the_cell_and_a_rerun_resumes(study, capsys):
    notebooks, out = study
    _notebook(notebooks / "01_first.ipynb", "print('first ran', profile)")
    _notebook(notebooks / "02_second.ipynb", "x = 1\nraise ZeroDivisionError('boom in second')", reads="01_first")
    with pytest.raises(SystemExit) as err:
        pipeline.main(["--profile", "smoke"])
    message = str(err.value)
    assert "02_second.ipynb failed in cell 3" in message and "ZeroDivisionError: boom in second" in message
    assert "raise ZeroDivisionError" in message  # the cell's source is shown
    assert (out / "notebooks" / "01_first.ipynb").exists()
    assert (out / "notebooks" / "02_second.failed.ipynb").exists()
    assert not (out / "notebooks" / "02_second.ipynb").exists()  # never a half-finished notebook under the final name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notebooks"]["01_first"]["status"] == "ok"
    assert manifest["notebooks"]["02_second"]["status"] == "failed"
    executed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert "first ran smoke" in json.dumps(executed.cells[-1].outputs)  # the profile was injected

    _notebook(notebooks / "02_second.ipynb", "print('fixed')", reads="01_first")
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "01_first: already done with these parameters, skipped" in log and "02_second: finished" in log
    assert not (out / "notebooks" / "02_second.failed.ipynb").exists()

    # an edited notebook is rerun, and so is every notebook that reads it
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


def test_reruns_follow_what_a_notebook_reads(study, capsys):
    notebooks, out = study
    _notebook(notebooks / "01_data.ipynb", "print('data')")
    _notebook(notebooks / "02_train_a.ipynb", "print('a')", reads="01_data")
    _notebook(notebooks / "03_train_b.ipynb", "print('b')", reads="01_data")
    _notebook(notebooks / "04_report.ipynb", "print('report')", reads="02_train_a, 03_train_b")
    assert pipeline.main(["--profile", "smoke"]) == 0
    capsys.readouterr()
    # a change to one training notebook reruns it and its reader, never its sibling
    _notebook(notebooks / "02_train_a.ipynb", "print('a, edited')", reads="01_data")
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "02_train_a: running (the notebook changed)" in log and "04_report: running (02_train_a runs now)" in log
    assert "03_train_b: already done" in log and "01_data: already done" in log
    # a notebook run on its own (--only) leaves its readers stale until they run
    assert pipeline.main(["--profile", "smoke", "--only", "03_train_b", "--force"]) == 0
    capsys.readouterr()
    assert staleness.plan(load_profile("smoke"), staleness.study_notebooks()) == {
        "01_data": None, "02_train_a": None, "03_train_b": None, "04_report": "03_train_b ran since"}
    # a notebook run directly (papermill, Jupyter) is not vouched for: the pipeline runs it again
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["notebooks"]["01_data"]["status"] = "direct"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert staleness.plan(load_profile("smoke"), staleness.study_notebooks())["01_data"] == "last run outside the pipeline"


def test_force_reaches_the_kernel_and_figures_are_inline(study):
    notebooks, out = study
    _notebook(notebooks / "01_plot.ipynb", "import os, matplotlib.pyplot as plt\nprint('force', os.environ['RLCP_FORCE'])\n"
                                           "plt.plot([0, 1]); plt.show()")
    assert pipeline.main(["--profile", "smoke", "--force"]) == 0
    executed = nbformat.read(out / "notebooks" / "01_plot.ipynb", as_version=4)
    outs = executed.cells[-1].outputs
    assert any("force 1" in o.get("text", "") for o in outs)
    assert any("image/png" in o.get("data", {}) for o in outs)


def test_a_renamed_notebook_leaves_no_stale_entry(study, capsys):
    notebooks, out = study
    _notebook(notebooks / "01_data.ipynb", "print('data')")
    _notebook(notebooks / "02_report.ipynb", "print('report')", reads="01_data")
    assert pipeline.main(["--profile", "smoke"]) == 0
    (notebooks / "02_report.ipynb").rename(notebooks / "03_report.ipynb")
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "02_report: no such notebook any more" in log and "03_report: running (never ran)" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["notebooks"]) == {"01_data", "03_report"}
    assert not (out / "notebooks" / "02_report.ipynb").exists() and (out / "notebooks" / "03_report.ipynb").exists()


def test_a_notebook_knows_what_it_needs_and_what_is_missing(study, monkeypatch):
    from rlcp_utils.core import notebook

    notebooks, out = study
    monkeypatch.setattr(notebook, "NOTEBOOK_DIR", notebooks)
    _notebook(notebooks / "01_data.ipynb", "print(1)")
    _notebook(notebooks / "02_a.ipynb", "print(2)", reads="01_data")
    _notebook(notebooks / "03_b.ipynb", "print(3)", reads="02_a")
    _notebook(notebooks / "04_c.ipynb", "print(4)", reads="03_b, 01_data")
    assert notebook.upstream("04_c") == ["01_data", "02_a", "03_b"] and notebook.upstream("01_data") == []
    P = load_profile("smoke")
    assert notebook.missing_upstream(P, "04_c") == ["01_data", "02_a", "03_b"]
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"notebooks": {
        "01_data": {"status": "ok"}, "02_a": {"status": "failed"}, "03_b": {"status": "direct"}}}))
    # a failed run is missing; a direct run (Jupyter, Colab, nbval) left its results and counts as present
    assert notebook.missing_upstream(P, "04_c") == ["02_a"]
    assert notebook.build_missing_upstream(P, "02_a") == []  # nothing missing: nothing runs


def test_the_estimate_comes_from_the_committed_run_of_the_profile():
    from rlcp_utils.core import notebook
    from rlcp_utils.core.config import REPO_ROOT

    runs = json.loads((REPO_ROOT / "outputs" / "default" / "manifest.json").read_text())["notebooks"]
    assert notebook.recorded_minutes("default", ["01_data", "no_such"]) == {"01_data": runs["01_data"]["wall_s"] / 60}
    assert notebook.recorded_minutes("no-such-profile", ["01_data"]) == {}


def test_a_profile_keeps_one_precision(study, capsys, monkeypatch):
    """Runs in bf16 recorded (a notebook and a training job): a machine that resolves to fp32 is refused before it
    runs anything, unless --force recomputes everything; a machine of the recorded precision goes on."""
    notebooks, out = study
    _notebook(notebooks / "01_first.ipynb", "print('ran')")
    job = out / "jobs" / "rlcp" / "seed0"
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"precision": "bf16"}))
    (out / "manifest.json").write_text(json.dumps({"notebooks": {"01_first": {"status": "ok", "precision": {"precision": "bf16"}}}}))
    assert staleness.recorded_precisions(load_profile("smoke")) == {"bf16": ["01_first", "job rlcp/seed0"]}

    def machine(precision):
        for module in (pipeline, staleness):  # what the run refuses, and what the check reports
            monkeypatch.setattr(module, "resolve_precision", lambda *a, **k: {"precision": precision, "reason": "mocked"})

    machine("fp32")
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "another precision than this machine's fp32" in err and "bf16: 2 runs (01_first, job rlcp/seed0)" in err
    assert not (out / "notebooks" / "01_first.ipynb").exists()  # nothing ran
    assert staleness.check(["smoke"]) == 1
    assert "the pipeline will refuse to add runs here" in capsys.readouterr().out

    machine("bf16")
    assert pipeline.main(["--profile", "smoke"]) == 0
    assert (out / "notebooks" / "01_first.ipynb").exists()

    machine("fp32")  # nothing left to run: nothing to refuse; --force --only would mix precisions: refused
    assert pipeline.main(["--profile", "smoke"]) == 0
    assert pipeline.main(["--profile", "smoke", "--force", "--only", "01_first"]) == 2


def test_rerun_runs_current_notebooks_again_without_forcing_their_contents(study, capsys, monkeypatch):
    """--rerun brings a study to this checkout's commit: a notebook made at another commit (or in a dirty tree) runs
    again, one already made at this clean commit is skipped (an interrupted rerun resumes), and the kernels are not
    told to recompute (RLCP_FORCE=0), so training jobs and cached analyses with current keys are reused."""
    notebooks, out = study
    _notebook(notebooks / "01_data.ipynb", "import os\nprint('force', os.environ['RLCP_FORCE'])")
    _notebook(notebooks / "02_report.ipynb", "print('report')", reads="01_data")
    commit = {"now": "aaa"}
    monkeypatch.setattr(staleness, "git_commit", lambda: commit["now"])  # what the plan compares with
    monkeypatch.setattr(outputs, "git_commit", lambda: commit["now"])  # what the manifest records
    assert pipeline.main(["--profile", "smoke"]) == 0
    capsys.readouterr()
    assert pipeline.main(["--profile", "smoke", "--rerun"]) == 0
    assert "01_data: already done" in capsys.readouterr().out  # made at this commit: nothing to bring over
    commit["now"] = "bbb"
    assert pipeline.main(["--profile", "smoke", "--rerun", "--only", "01_data"]) == 0
    assert "01_data: running (--rerun)" in capsys.readouterr().out
    executed = nbformat.read(out / "notebooks" / "01_data.ipynb", as_version=4)
    assert "force 0" in json.dumps(executed.cells[-1].outputs)
    entries = json.loads((out / "manifest.json").read_text())["notebooks"]
    # the manifest says why each ran: 01's entry is a rerun (its wall time is not what computing it costs), 02's not
    assert (entries["01_data"]["ran_because"], entries["01_data"]["run_mode"]) == ("--rerun", "rerun")
    assert (entries["02_report"]["ran_because"], entries["02_report"]["run_mode"]) == ("never ran", "normal")
    assert staleness.plan(load_profile("smoke"), staleness.study_notebooks()) == {"01_data": None, "02_report": "01_data ran since"}
    assert staleness.plan(load_profile("smoke"), staleness.study_notebooks(), rerun=True) == {"01_data": None, "02_report": "01_data ran since"}
    commit["now"] = "bbb+dirty"  # a dirty tree's runs are never taken for this commit's
    assert staleness.plan(load_profile("smoke"), staleness.study_notebooks(), rerun=True)["01_data"] == "--rerun"


def test_a_partial_profile_runs_and_is_judged_on_its_own_notebooks(study, capsys, monkeypatch):
    """A control profile that runs some notebooks (PROFILE_NOTEBOOKS) is current when those are: the notebooks it never
    runs, and a notebook they read that it does not run, do not make it stale."""
    notebooks, out = study
    _notebook(notebooks / "01_data.ipynb", "print('data')")
    _notebook(notebooks / "02_baselines.ipynb", "print('baselines')", reads="01_data")
    _notebook(notebooks / "03_rlcp.ipynb", "print('rlcp')", reads="01_data, 02_baselines")
    monkeypatch.setitem(staleness.PROFILE_NOTEBOOKS, "smoke", ("01_data", "03_rlcp"))
    assert pipeline.main(["--profile", "smoke"]) == 0
    log = capsys.readouterr().out
    assert "03_rlcp: finished" in log and "02_baselines" not in log
    assert staleness.stale_outputs(load_profile("smoke")) == {}
    # a direct run of 03 asks the pipeline for what it reads (core.notebook.build_missing_upstream): 02 is skipped
    assert pipeline.main(["--profile", "smoke", "--only", "02_baselines"]) == 0
    assert "02_baselines: profile smoke does not run it (PROFILE_NOTEBOOKS), skipped" in capsys.readouterr().out
    assert [nb.stem for nb in staleness.study_notebooks(load_profile("smoke", {"epochs": 2}))] == ["01_data", "03_rlcp"]  # an override keeps the list
    monkeypatch.delitem(staleness.PROFILE_NOTEBOOKS, "smoke")  # judged as a whole study, it lacks 02
    assert staleness.stale_outputs(load_profile("smoke")) == {"02_baselines": "never ran", "03_rlcp": "02_baselines runs now"}


def test_fp32_check_is_judged_on_the_notebooks_it_runs():
    names = [nb.stem for nb in staleness.study_notebooks(load_profile("fp32-check"))]
    assert names == ["01_data", "03_rlcp_training"]
    assert len(staleness.study_notebooks(load_profile("default"))) == len(staleness.study_notebooks()) >= 15
