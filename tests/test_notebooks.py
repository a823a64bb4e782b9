"""Every study notebook is a jupytext pair that agrees, has a parameters cell, a Colab badge and install cell."""

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.compare import compare_notebooks

from rlcp_utils.core.config import REPO_ROOT, load_profile
from rlcp_utils.core import outputs
from rlcp_utils.core.outputs import README_BLOCKS, README_TABLES
from rlcp_utils.study import colab, recompute, staleness

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
COLAB = "https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb"


def _repo_slug():
    return colab.repository_slug()  # pyproject.toml's [project.urls] Repository, the one place of the address


@pytest.mark.parametrize("path", colab.targets(), ids=lambda p: p.name)
def test_every_badge_and_setup_cell_names_the_configured_repository(path: Path):
    text = path.read_text()
    assert colab.render(text, _repo_slug()) == text, (f"{path.name} names another repository than pyproject.toml: run "
                                                      "`python -m rlcp_utils.study.colab` and `make notebooks`")


def test_the_address_is_rewritten_everywhere_from_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/someone/fork"\n')
    assert colab.repository_slug(pyproject) == "someone/fork"
    text = ('# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/'
            'github/rlcp-study/rlcp/blob/main/notebooks/04_probing.ipynb)\n\n# %%\n# Colab setup (an older version)\n'
            'REPOSITORY = "https://github.com/rlcp-study/rlcp"\n\n# %% tags=["parameters"]\nprofile: str = "default"\n')
    out = colab.render(text, "someone/fork")
    assert "github/someone/fork/blob/main/notebooks/04_probing.ipynb" in out and "colab-badge.svg" in out
    assert colab.setup_cell("someone/fork") in out and '"https://github.com/someone/fork"' in out
    assert "rlcp-study" not in out and "an older version" not in out and out.endswith('profile: str = "default"\n')


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.py found"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_agrees(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --to ipynb {py}`"
    # raises with a diff when the two differ (jupytext --diff would always exit 0)
    compare_notebooks(jupytext.read(ipynb), jupytext.read(py), fmt="py:percent")


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_header_parameters_and_colab(py: Path):
    nb = jupytext.read(py)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and re.search(r'^profile: str = "default"', params[0].source, re.M)
    assert nb.metadata["kernelspec"]["name"] == "python3"  # papermill needs a kernel name
    badge = COLAB.format(repo=_repo_slug(), name=py.stem)
    assert badge in nb.cells[0].source, "first cell must carry the Colab badge for this notebook"
    assert badge in (REPO_ROOT / "README.md").read_text(), "README must link this notebook's Colab badge"
    # the second cell is the Colab setup cell, exactly as colab.py writes it for the configured repository
    setup = jupytext.reads(colab.setup_cell(_repo_slug()), fmt="py:percent").cells[0].source
    assert nb.cells[1].source == setup
    assert not any("../shared" in c.source for c in nb.cells)


@pytest.mark.parametrize("block", sorted(README_TABLES))
def test_generated_blocks_are_the_committed_results(block):
    """The documentation's generated blocks are copies of what the pipeline (or make bench) wrote, never typed by hand;
    a block whose notebook's committed outputs are stale against this checkout is reported, not passed."""
    name, writer, document = README_TABLES[block]
    text = (REPO_ROOT / document).read_text()
    start, end = README_BLOCKS[block]
    assert start in text and end in text, f"{document} lacks the {block} block"
    shown = text.split(start, 1)[1].split(end, 1)[0].strip()
    table = REPO_ROOT / "outputs" / name
    if block == "run_times":  # the pipeline writes it from the manifest: it must be that manifest's table
        manifest = json.loads((table.parent.parent / "manifest.json").read_text())
        assert table.read_text() == outputs.run_times_table(manifest)
    everything_stale = staleness.stale_outputs(load_profile("default"))
    stale = (everything_stale and "; ".join(everything_stale)) if writer == "pipeline" else everything_stale.get(writer) if writer else None
    if stale:
        pytest.xfail(f"{writer}, which writes outputs/{name}, is stale (make check): {stale}")
    assert shown == (table.read_text().strip() if table.exists() else "")


def _committed(pattern: str) -> list[Path]:
    import subprocess

    out = subprocess.run(["git", "ls-files", pattern], cwd=REPO_ROOT, capture_output=True, text=True).stdout.split()
    return [REPO_ROOT / p for p in out]


@pytest.mark.parametrize("name", staleness.committed_profiles())
def test_committed_outputs_are_current_or_reported_stale(name):
    """Every committed notebook run that is current against this checkout (its notebook, parameters and the package
    code it ran: `make check`) names a clean commit; stale ones are reported, never passed as current."""
    profile = load_profile(name)
    stale = staleness.stale_outputs(profile)
    manifest = json.loads((profile.output_dir / "manifest.json").read_text())
    for nb, entry in manifest.get("notebooks", {}).items():
        if nb in stale:
            continue
        assert entry["status"] == "ok", f"{name}: {nb} is {entry['status']}"
        commit = entry.get("git_commit") or ""
        assert commit and not commit.endswith("+dirty"), f"{name}: {nb} names no clean commit ({commit!r})"
    if stale:
        pytest.xfail(f"outputs/{name} is stale against this checkout (make check): "
                     + "; ".join(f"{nb}: {why}" for nb, why in stale.items()))


@pytest.mark.parametrize("name", staleness.committed_profiles())
def test_committed_jobs_were_trained_by_this_checkouts_code_in_one_precision(name):
    """Every committed training job (job.json) records the hash of the training code it ran: where the profile's
    outputs are current, that is this checkout's, and every job and notebook run holds the same precision."""
    from rlcp_utils.training import jobs

    profile = load_profile(name)
    infos = [json.loads(p.read_text()) for p in sorted(profile.output_dir.glob("jobs/*/*/job.json"))]
    assert len(staleness.recorded_precisions(profile)) <= 1, staleness.recorded_precisions(profile)
    stale = staleness.stale_outputs(profile)
    if stale:
        pytest.xfail(f"outputs/{name} is stale against this checkout (make check): {', '.join(stale)}")
    other = sorted({i["code_sha256"] for i in infos} - {jobs.job_code_sha256()})
    assert not other, f"{name}: jobs made by other training code ({other}) than this checkout's ({jobs.job_code_sha256()})"


@pytest.mark.parametrize("name", staleness.committed_profiles())
def test_committed_summary_rows_recompute_from_their_per_prompt_rows(name):
    """Every current committed notebook with a recipe (study/recompute.py): each record row its recipes cover equals
    the value recomputed from the committed per-prompt rows; stale notebooks are left to their regeneration."""
    profile = load_profile(name)
    stale = staleness.stale_outputs(profile)
    checked = [nb for nb in recompute.RECIPES if nb not in stale and (profile.output_dir / "results" / f"{nb}.csv").exists()]
    for nb in checked:
        t = recompute.recompute(profile.output_dir, nb)
        assert len(t), f"{name}: {nb} has no recomputable row"
        bad = t[t.abs_diff > 1e-9]
        assert bad.empty, f"{name}: {nb} rows differ from their per-prompt rows:\n{bad.head().to_string()}"
    if not checked:
        pytest.skip(f"outputs/{name}: no current notebook with a recipe")


def test_committed_executed_notebooks_show_figures_and_no_machine_paths():
    notebooks = _committed("outputs/*/notebooks/*.ipynb")
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if any("plt.show()" in c.source for c in code):
            assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), path.name
        text = json.dumps([c.get("outputs", []) for c in code]) + json.dumps(nb.metadata)
        for marker in ("/work/", "/home/", "/root/", "/tmp/", "site-packages", "Warning:"):
            assert marker not in text, f"{path.relative_to(REPO_ROOT)} shows {marker!r}"


def test_readme_starts_with_how_to_run_it_and_stays_short():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move reference material to docs/"
    first_command = next(i for i, line in enumerate(lines, 1) if line.startswith("make "))
    assert first_command <= 60, f"the README's first command is on line {first_command}"
    for link in re.findall(r"\]\(((?:docs|outputs)/[^)#]+)", "\n".join(lines)):
        assert (REPO_ROOT / link).exists(), f"README links to {link}, which does not exist"
