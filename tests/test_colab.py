"""The Colab path, simulated here: an empty folder, a notebook's setup cell run against a local repository (a file
URL in place of GitHub's), then the notebook on the smoke profile with no other preparation. The earlier notebook
it reads (01_data) is not there: the notebook builds it with the pipeline, then runs."""

import json
import os
import shutil
import subprocess
import sys

import nbformat
import papermill as pm
import pytest

from rlcp_utils.core.config import REPO_ROOT, cache_root
from rlcp_utils.study import colab

pytestmark = pytest.mark.smoke

NOTEBOOK = "02_baselines"  # the first notebook that reads another one's results


def _repository_of_this_working_tree(dest):
    """A git repository holding this working tree as it is (tracked and untracked files that git does not ignore),
    committed once: what GitHub would serve if this tree were pushed."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "working tree"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory):
    origin = _repository_of_this_working_tree(tmp_path_factory.mktemp("origin"))
    runtime = tmp_path_factory.mktemp("content")  # Colab's /content: empty
    # the model cache is this checkout's (a fresh runtime dequantizes the GGUF once, 20-30 s, and measures bf16)
    env = {colab.COLAB_ENV: "1", colab.REPOSITORY_ENV: origin.as_uri(), "MPLBACKEND": "Agg", "RLCP_CACHE_DIR": str(cache_root())}
    saved = {k: os.environ.get(k) for k in [*env, "RLCP_OUTPUTS_DIR", "PYTHONPATH"]}
    here = REPO_ROOT / "outputs" / "smoke" / "manifest.json"  # this checkout's smoke results, if any: left alone
    before = here.stat().st_mtime_ns if here.exists() else None
    os.environ.update(env)
    for k in ("RLCP_OUTPUTS_DIR", "PYTHONPATH"):  # the clone's own outputs/ and package, as in a fresh runtime
        os.environ.pop(k, None)
    try:
        executed = pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"), str(runtime / "executed.ipynb"),
                                       parameters={"profile": "smoke"}, kernel_name="python3", cwd=str(runtime),
                                       progress_bar=False)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert (here.stat().st_mtime_ns if here.exists() else None) == before, "the notebook wrote into this checkout"
    return runtime / "rlcp", executed


def _printed(executed) -> str:
    return "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_the_setup_cell_clones_the_repository_and_the_notebook_runs_inside_it(colab_run):
    clone, executed = colab_run
    assert (clone / ".git").is_dir() and (clone / "notebooks" / f"{NOTEBOOK}.ipynb").exists()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    assert f"working in {clone} at commit {head}" in _printed(executed)
    # the kernel imported the clone's package, not the one installed here: its results are under the clone
    manifest = json.loads((clone / "outputs" / "smoke" / "manifest.json").read_text())
    assert manifest["notebooks"][NOTEBOOK]["status"] == "direct"
    assert (clone / "outputs" / "smoke" / "results" / f"{NOTEBOOK}.csv").exists()


def test_the_missing_upstream_notebook_is_built_by_the_pipeline_with_its_own_peak_memory(colab_run):
    clone, executed = colab_run
    printed = _printed(executed)
    assert f"{NOTEBOOK} reads results that are missing here: 01_data" in printed
    assert "upstream of 02_baselines: 1/1 built" in printed
    entry = json.loads((clone / "outputs" / "smoke" / "manifest.json").read_text())["notebooks"]["01_data"]
    assert entry["status"] == "ok" and entry["code_sha256"]
    assert (clone / "outputs" / "smoke" / "notebooks" / "01_data.ipynb").exists()
    # the kernel's own peak: the model (0.5 GiB of fp32 weights) is loaded, and far from the runner's whole history
    assert 0.5 < entry["peak_rss_gib"] < 12 and entry["workers_peak_rss_gib"] >= 0


def test_the_pipeline_in_the_clone_resumes_what_the_notebook_built(colab_run):
    clone, _ = colab_run
    env = {k: v for k, v in os.environ.items() if k != "RLCP_OUTPUTS_DIR"}
    rerun = subprocess.run([sys.executable, "-m", "rlcp_utils.study.pipeline", "--profile", "smoke", "--only", "01_data"],
                           cwd=clone, env={**env, "PYTHONPATH": str(clone), "RLCP_CACHE_DIR": str(cache_root())}, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "01_data: already done with these parameters, skipped" in rerun.stdout
    assert f"results go to {clone / 'outputs' / 'smoke'}" in rerun.stdout
