import pytest

from rlcp_utils.core import outputs
from rlcp_utils.core.config import load_profile


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    return load_profile("smoke")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    outputs.atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "replace", broken_replace)
    with pytest.raises(OSError):
        outputs.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_written_files_and_folders_are_readable_by_others(tmp_path):
    import os
    import stat

    from rlcp_utils.core.model import folder_written_atomically

    old = os.umask(0o022)
    try:
        outputs.atomic_write_text(tmp_path / "a.txt", "x")
        with folder_written_atomically(tmp_path / "job") as d:
            (d / "f.json").write_text("{}")
            os.chmod(d / "f.json", 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "job").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "job" / "f.json").stat().st_mode) == 0o644


def test_manifest_records_versions_commit_hash_and_wall_time(profile):
    outputs.record_notebook_run(profile, "01_data", 12.34, "abc", "ok")
    m = outputs.record_notebook_run(profile, "02_baselines", 5.0, "def", "failed", {"01_data": "t"})
    assert m["param_hash"] == profile.hash and m["params"]["n_targets"] == profile["n_targets"]
    entry = m["notebooks"]["02_baselines"]
    assert entry["reads"] == {"01_data": "t"} and entry["git_commit"] and entry["precision"]["precision"] in ("fp32", "bf16")
    assert "cpu_bf16_flags" in m["machine"] and "git_commit" not in m
    assert m["versions"]["torch"] and m["versions"]["transformers"] and m["versions"]["python"]
    assert m["notebooks"]["01_data"]["wall_s"] == 12.3 and m["notebooks"]["01_data"]["status"] == "ok"
    assert m["notebooks"]["02_baselines"]["status"] == "failed"


def test_save_figure_writes_png_and_pdf(profile):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = outputs.save_figure(profile, fig, "line")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


def test_markdown_table_and_readme_block(tmp_path):
    import pandas as pd

    md = outputs.markdown_table(pd.DataFrame({"rlcp": ["5.0% [0%, 10%]"]}, index=pd.Index(["recall"], name="metric")))
    assert md == "| metric | rlcp |\n|---|---|\n| recall | 5.0% [0%, 10%] |\n"
    readme = tmp_path / "README.md"
    start, end = outputs.README_BLOCKS["table1"]
    readme.write_text(f"intro\n{start}\nold\n{end}\nrest\n")
    assert outputs.update_readme_table(readme, md)
    assert readme.read_text() == f"intro\n{start}\n{md}{end}\nrest\n"
    plain = tmp_path / "OTHER.md"
    plain.write_text("no block")
    assert not outputs.update_readme_table(plain, md) and plain.read_text() == "no block"


def test_commit_is_dirty_for_code_changes_not_for_results(tmp_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    (repo / "outputs").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "outputs" / "r.csv").write_text("a\n")
    (repo / "README.md").write_text("readme\n")
    (repo / "docs" / "templates").mkdir(parents=True)
    (repo / "docs" / "templates" / "results.md").write_text("{placeholder}\n")
    (repo / "docs" / "results.md").write_text("rendered\n")
    (repo / "docs" / "guide.md").write_text("written by hand\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    monkeypatch.setattr(outputs, "REPO_ROOT", repo)
    assert not outputs.git_commit().endswith("+dirty")
    (repo / "outputs" / "r.csv").write_text("b\n")
    (repo / "README.md").write_text("readme, block rewritten\n")
    (repo / "docs" / "results.md").write_text("rendered again\n")  # a rendered document: what a run writes
    assert not outputs.git_commit().endswith("+dirty")
    (repo / "docs" / "guide.md").write_text("edited\n")  # a document written by hand is code
    assert outputs.git_commit().endswith("+dirty")
    subprocess.run([*git, "checkout", "-q", "docs/guide.md"], check=True)
    (repo / "code.py").write_text("x = 2\n")
    assert outputs.git_commit().endswith("+dirty")
