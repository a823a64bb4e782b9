"""Smoke run: every notebook, in order, on params/smoke.yaml with the real offline model, through the same
runner as `make reproduce`; then checks on what the notebooks wrote."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

from rlcp_utils import data
from rlcp_utils.config import REPO_ROOT, load_profile
from rlcp_utils.pipeline import study_notebooks

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    env = {**os.environ, "RLCP_OUTPUTS_DIR": str(out), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "rlcp_utils.pipeline", "--profile", "smoke"]
    first = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    return out / "smoke", first, second


def test_every_notebook_ran_without_errors(smoke_run):
    out, _, _ = smoke_run
    manifest = json.loads((out / "manifest.json").read_text())
    for nb in study_notebooks():
        assert manifest["notebooks"][nb.stem]["status"] == "ok"
        executed = nbformat.read(out / "notebooks" / nb.name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors
    assert manifest["param_hash"] == load_profile("smoke").hash and manifest["versions"]["torch"]


def test_rerun_resumes_instead_of_recomputing(smoke_run):
    _, _, second = smoke_run
    assert second.returncode == 0
    assert second.stdout.count("already done with these parameters, skipped") == len(study_notebooks())


def test_data_notebook_selects_known_distinct_facts(smoke_run):
    out, _, _ = smoke_run
    p = load_profile("smoke")
    targets = data.read_jsonl(out / "data" / "targets.jsonl")
    retain = data.read_jsonl(out / "data" / "retain.jsonl")
    probe = data.read_jsonl(out / "data" / "country_probe_cities.jsonl")
    assert len(targets) == p["n_targets"] and len(retain) == p["n_retain"]
    assert len({t["country"] for t in targets}) == p["n_targets"]
    assert sorted(t["label"] for t in targets) == list(range(p["n_targets"]))
    assert {c["country"] for c in probe} == {t["country"] for t in targets}
    assert all(t["recall_train"] >= p["known_threshold"] for t in targets + retain)
    templates = json.loads((out / "data" / "templates.json").read_text())
    assert templates["prompt_format"] in ("plain", "chat")
    assert {q["split"] for q in templates["questions"]} == {"train", "heldout"}


def test_group_a_metrics_have_chance_n_and_spread(smoke_run):
    out, _, _ = smoke_run
    p = load_profile("smoke")
    m = json.loads((out / "metrics.json").read_text())
    original = m["arms"]["original"]
    for facts in ("targets", "retain"):
        for metric in ("no_context_recall", "rag_accuracy"):
            for split in ("train", "heldout"):
                key = f"{facts}.{metric}.{split}"
                assert 0.0 <= original[key] <= 1.0
                lo, hi = m["spread"]["original"][key]
                assert lo <= original[key] <= hi
                assert 0.0 <= m["chance"]["original"][key] <= 1.0
                assert m["n_items"][key]["facts"] == p[f"n_{facts}"]
    # Group A re-scores the targets in different batches than the screening that selected them (each
    # target recalled on >= known_threshold of the training templates): the two must agree.
    assert original["targets.no_context_recall.train"] >= p["known_threshold"]
    # the model should answer the chosen facts far more often than it names a wrong country of the set
    assert original["targets.no_context_recall.train"] > m["chance"]["original"]["targets.no_context_recall.train"] + 0.3
    assert (out / "figures" / "01_group_a.png").exists() and (out / "tables" / "target_facts.csv").exists()


def test_every_arm_is_trained_logged_and_in_table1(smoke_run):
    import pandas as pd

    from rlcp_utils import train

    out, _, _ = smoke_run
    p = load_profile("smoke")
    m = json.loads((out / "metrics.json").read_text())
    steps = -(-p["n_targets"] // p["batch_size"]) * p["epochs"]
    for arm in p["arms"]:
        log = pd.read_csv(out / "logs" / f"train_{arm}.csv")
        assert list(log.columns) == train.LOG_FIELDS and len(log) == steps
        assert log["alpha"].iloc[0] == 0.0 and log["alpha"].is_monotonic_increasing
        assert m["training"][arm]["steps"] == steps
        key = "targets.adversary_probe_accuracy.train"
        assert 0.0 <= m["arms"][arm][key] <= 1.0 and m["chance"][arm][key] == pytest.approx(1 / p["n_targets"])
        assert (out / "checkpoints" / arm / "checkpoint.json").exists()
    # the arms' switched-off terms really are off in the logs
    rag_log = pd.read_csv(out / "logs" / "train_unlikelihood.csv")
    assert (rag_log["l_rag"] == 0).all() and (rag_log["l_unlikelihood"] < 0).all()
    just_rag = pd.read_csv(out / "logs" / "train_just_rag.csv")
    assert (just_rag["l_unlikelihood"] == 0).all() and (just_rag["l_rag"] > 0).all()
    table1 = pd.read_csv(out / "tables" / "table1.csv")
    assert set(table1["arm"]) == {"original", *p["arms"]}
    assert {"value", "ci_low", "ci_high", "chance", "n_facts", "n_prompts", "paper"} <= set(table1.columns)
    assert (out / "figures" / "03_training_curves.png").exists()
    checks = pd.read_csv(out / "tables" / "table1_checks.csv")
    assert checks["holds"].dtype == bool and len(checks) >= 5


def test_probing_notebook_writes_curves_and_heldout_accuracies(smoke_run):
    import pandas as pd

    out, _, _ = smoke_run
    p = load_profile("smoke")
    m = json.loads((out / "metrics.json").read_text())
    curve = pd.read_csv(out / "tables" / "04_probe_accuracy_by_layer.csv")
    n_layers = m["probing"]["n_layers"]
    assert set(curve.layer) == set(range(n_layers)) and set(curve.probe) == {"linear", "mlp"}
    assert set(curve.test) == {"fact", "country_other", "country_target"} and curve.accuracy.between(0, 1).all()
    for arm in ["original", *p["arms"]]:
        for probe in ("linear", "mlp"):
            key = f"heldout_probe_accuracy.fact.{probe}.last"
            v, (lo, hi) = m["arms"][arm][key], m["spread"][arm][key]
            assert 0 <= lo <= v <= hi <= 1 and m["chance"][arm][key] == pytest.approx(1 / p["n_targets"])
    # the original model names the city in the prompt: its fact probe reads held-out templates well above chance
    assert m["arms"]["original"]["heldout_probe_accuracy.fact.linear.last"] > 1 / p["n_targets"] + 0.2
    lens = pd.read_csv(out / "tables" / "04_logit_lens.csv")
    # at the last layer the logit lens is the model's own next-token prediction: the original recalls the targets
    last = lens[(lens.arm == "original") & (lens.layer == n_layers - 1)].answer_top1.iloc[0]
    assert last >= m["arms"]["original"]["targets.no_context_recall.train"] - 0.35
    for fig in ("04_probe_accuracy_by_layer", "04_logit_lens", "05_fig1_tsne_cities_fruits", "05_fig2_type_centroids_pca"):
        assert (out / "figures" / f"{fig}.png").exists()


def test_collapse_attention_and_gsm8k_measures(smoke_run):
    import pandas as pd

    out, _, _ = smoke_run
    p = load_profile("smoke")
    m = json.loads((out / "metrics.json").read_text())
    for arm in ["original", *p["arms"]]:
        a = m["arms"][arm]
        for ctx in ("entity", "question"):
            assert 0 <= a[f"collapse.{ctx}.identity_nn.fruit"] <= 1 and -1 <= a[f"collapse.{ctx}.silhouette"] <= 1
            assert a[f"collapse.{ctx}.within_to_between"] > 0
        assert 0 <= a["attention.evidence_weight.target"] <= 1
        # entropies in nats of distributions over at most ~100 prompt tokens: within [0, ln 100]
        assert 0 <= a["attention.entropy_context.target"] <= 4.61 and 0 <= a["attention.entropy_all.target"] <= 4.61
        assert 0 <= a["gsm8k.correct"] <= 1 and a["gsm8k.n_tokens"] <= p["gsm8k_max_new_tokens"] + 1
    # the original model's types are separable on held-out entities (cities vs fruits vs numbers)
    assert m["arms"]["original"]["collapse.entity.type_probe_heldout_entities"] > 0.5
    gens = pd.read_csv(out / "tables" / "07_gsm8k_generations_original.csv", keep_default_na=False)
    assert len(gens) == p["gsm8k_n_problems"] and (gens.generation.str.len() > 0).all()
    assert m["arms"]["original"]["gsm8k.correct.minus_original"] == 0.0


def test_report_judges_every_claim(smoke_run):
    import pandas as pd

    out, _, _ = smoke_run
    claims = pd.read_csv(out / "tables" / "08_claims.csv")
    assert len(claims) >= 17
    assert set(claims.verdict) <= {"reproduced", "partly", "not reproduced", "inconclusive", "not measured"}
    assert (claims.verdict != "not measured").all()  # the smoke profile trains every arm and runs every notebook
    report = (out / "report.md").read_text()
    assert "## Claims" in report and "figures/04_probe_accuracy_by_layer.png" in report
