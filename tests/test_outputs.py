import json

import pytest

from rlcp_utils import outputs
from rlcp_utils.config import load_profile


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


def test_update_metrics_merges_sections_and_arms(profile):
    outputs.update_metrics(profile, "arms", {"original": {"a": 1.0}})
    outputs.update_metrics(profile, "arms", {"original": {"b": 2.0}, "rlcp": {"a": 0.1}})
    outputs.update_metrics(profile, "arms", {"original": {"a": 0.5}})
    m = json.loads((profile.output_dir / "metrics.json").read_text())
    assert m["arms"] == {"original": {"a": 0.5, "b": 2.0}, "rlcp": {"a": 0.1}}
    assert m["profile"] == "smoke"


def test_manifest_records_versions_commit_hash_and_wall_time(profile):
    outputs.record_notebook_run(profile, "01_data", 12.34, "abc", "ok")
    m = outputs.record_notebook_run(profile, "02_baselines", 5.0, "def", "failed")
    assert m["param_hash"] == profile.hash and m["params"]["n_targets"] == profile["n_targets"]
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


def test_drop_metrics_removes_one_notebooks_keys_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    p = load_profile("smoke")
    outputs.update_metrics(p, "arms", {"rlcp": {"collapse.old": 1.0, "gsm8k.correct": 0.1}})
    outputs.update_metrics(p, "spread", {"rlcp": {"collapse.old": [0, 1]}})
    outputs.update_metrics(p, "n_items", {"collapse.old": {"entities": 3}, "gsm8k.correct": {"problems": 4}})
    outputs.drop_metrics(p, "collapse.")
    m = outputs.read_json(p.output_dir / "metrics.json")
    assert m["arms"]["rlcp"] == {"gsm8k.correct": 0.1} and m["spread"]["rlcp"] == {}
    assert list(m["n_items"]) == ["gsm8k.correct"]
