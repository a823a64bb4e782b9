"""Smoke run: every notebook, in order, on the smoke profile with the real offline model, run by nbval
(`pytest --nbval-lax`, what the design card asks for: a notebook that raises or a marked output that changes fails
it); then checks on what the notebooks wrote. The pipeline's own runs (papermill, the manifest, resuming) are
exercised by tests/test_colab.py and tests/test_pipeline.py."""

import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from rlcp_utils.data import facts
from rlcp_utils.core.config import REPO_ROOT, load_profile
from rlcp_utils.study import checked_outputs
from rlcp_utils.study.staleness import study_notebooks

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    prepared = checked_outputs.prepare(root / "prepared", "smoke")
    env = {**os.environ, "RLCP_OUTPUTS_DIR": str(root / "outputs"), "MPLBACKEND": "Agg",
           checked_outputs.EXECUTED_ENV: str(root / "executed")}
    run = subprocess.run(checked_outputs.nbval_command(prepared), cwd=root / "prepared", env=env, capture_output=True,
                         text=True, timeout=1500)
    (root / "nbval.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, f"nbval failed (log: {root / 'nbval.log'}):\n" + run.stdout[-6000:]
    return root / "outputs" / "smoke", root / "executed", run


def test_every_notebook_ran_under_nbval_and_recorded_its_own_peak_memory(smoke_run):
    out, executed, run = smoke_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert " passed" in run.stdout and " failed" not in run.stdout
    for nb in study_notebooks():
        entry = manifest["notebooks"][nb.stem]
        assert entry["status"] == "direct" and (executed / nb.name).exists()
        # each kernel's own peak (not the largest so far): the model is loaded in every notebook but 15_report
        assert 0.2 < entry["peak_rss_gib"] < 12, (nb.stem, entry["peak_rss_gib"])


def test_data_notebook_selects_known_distinct_facts(smoke_run):
    out, _, _ = smoke_run
    p = load_profile("smoke")
    targets = facts.read_jsonl(out / "data" / "targets.jsonl")
    retain = facts.read_jsonl(out / "data" / "retain.jsonl")
    probe = facts.read_jsonl(out / "data" / "country_probe_cities.jsonl")
    assert len(targets) == p["n_targets"] and len(retain) == p["n_retain"]
    assert len({t["country"] for t in targets}) == p["n_targets"]
    assert sorted(t["label"] for t in targets) == list(range(p["n_targets"]))
    assert {c["country"] for c in probe} == {t["country"] for t in targets}
    assert all(t["recall_train"] >= p["known_threshold"] and t["status"] == "known" for t in targets + retain + probe)
    # the smoke profile trains on its committed facts, and this screening selects the same ones
    committed = json.loads(facts.fact_set_path(p["fact_set"]).read_text())["draws"][0]
    assert [t["city"] for t in targets] == [t["city"] for t in committed["targets"]]
    agreement = pd.read_csv(out / "tables" / "fact_set_agreement.csv")
    assert (agreement.shared == agreement.committed).all() and (agreement.committed == agreement.selected_here).all()
    templates = json.loads((out / "data" / "templates.json").read_text())
    assert templates["prompt_format"] in ("plain", "chat")
    assert {q["split"] for q in templates["questions"]} == {"train", "heldout"}


def _view(out):
    from rlcp_utils.core import results
    from rlcp_utils.study import claims

    return claims.View(results.load_dir(out / "results"))


def test_group_a_metrics_have_chance_n_and_spread(smoke_run):
    out, _, _ = smoke_run
    p = load_profile("smoke")
    v = _view(out)
    for fact_set in ("targets", "retain"):
        for metric in ("no_context_recall", "rag_accuracy"):
            for split in ("train", "heldout"):
                key = f"{fact_set}.{metric}.{split}"
                r = v.row("original", key)
                assert 0.0 <= r.ci_low <= r.value <= r.ci_high <= 1.0 and 0.0 <= r.chance <= 1.0
                assert r.n_units == p[f"n_{fact_set}"] and r.seed == "all" and r.n_seeds == 0
    # Group A re-scores the targets in different batches than the screening that selected them (each
    # target recalled on >= known_threshold of the training templates): the two must agree.
    assert v.value("original", "targets.no_context_recall.train") >= p["known_threshold"]
    # the model should answer the chosen facts far more often than it names a wrong country of the set
    assert v.value("original", "targets.no_context_recall.train") > v.chance("original", "targets.no_context_recall.train") + 0.3
    assert (out / "figures" / "01_group_a.png").exists() and (out / "tables" / "target_facts.csv").exists()


def test_every_arm_and_seed_is_a_job_logged_and_in_table1(smoke_run):
    import pandas as pd

    from rlcp_utils.core import results
    from rlcp_utils.training import loop

    out, _, _ = smoke_run
    p = load_profile("smoke")
    record = results.load_dir(out / "results")
    steps = -(-p["n_targets"] // p["batch_size"]) * p["epochs"]
    for arm in p["arms"]:
        for seed in p["seeds"]:
            job = out / "jobs" / arm / f"seed{seed}"
            log = pd.read_csv(job / "train_log.csv")
            assert list(log.columns) == loop.LOG_FIELDS and len(log) == steps
            assert log["alpha"].iloc[0] == 0.0 and log["alpha"].is_monotonic_increasing
            assert json.loads((job / "job.json").read_text())["steps"] == steps
            # weights are kept for the first seed only (the analyses' model)
            assert (out / "checkpoints" / arm / f"seed{seed}" / "checkpoint.json").exists() == (seed == p["seeds"][0])
        rows = record[(record.arm == arm) & (record.metric == "targets.adversary_probe_accuracy.train")]
        assert set(rows.seed) == {*map(str, p["seeds"]), "all"}
        assert rows.chance.astype(float).tolist() == pytest.approx([1 / p["n_targets"]] * len(rows))
        assert rows[rows.seed == "all"].n_seeds.iloc[0] == len(p["seeds"])
    # the arms' switched-off terms really are off in the logs
    rag_log = pd.read_csv(out / "jobs" / "unlikelihood" / "seed0" / "train_log.csv")
    assert (rag_log["l_rag"] == 0).all() and (rag_log["l_unlikelihood"] < 0).all()
    just_rag = pd.read_csv(out / "jobs" / "just_rag" / "seed0" / "train_log.csv")
    assert (just_rag["l_unlikelihood"] == 0).all() and (just_rag["l_rag"] > 0).all()
    table1 = pd.read_csv(out / "tables" / "table1.csv")
    assert set(table1["arm"]) == {"original", *p["arms"]}
    assert {"value", "ci_low", "ci_high", "seed_min", "seed_max", "chance", "n_facts", "n_prompts", "n_seeds", "paper"} <= set(table1.columns)
    assert (out / "figures" / "03_training_curves.png").exists()
    # 03 shows the Table 1 claims with exactly the verdicts of the report (one set of rules)
    t1_claims = pd.read_csv(out / "tables" / "03_table1_claims.csv").set_index("claim").verdict
    report = pd.read_csv(out / "tables" / "15_claims.csv").set_index("claim").verdict
    assert len(t1_claims) >= 5 and (report.loc[t1_claims.index] == t1_claims).all()


def test_probing_notebook_writes_curves_and_heldout_accuracies(smoke_run):
    import pandas as pd

    out, _, _ = smoke_run
    p = load_profile("smoke")
    v = _view(out)
    curve = pd.read_csv(out / "tables" / "04_probe_accuracy_by_layer.csv")
    n_layers = curve.layer.max() + 1  # the last layer is always on the curve
    assert set(curve.layer) == set(range(0, n_layers, p["probe_curve_stride"])) | {p["probe_layer"], n_layers - 1}
    assert set(curve.probe) == {"linear", "mlp"}
    assert set(curve.test) == {"fact", "country_other", "country_target"} and curve.accuracy.between(0, 1).all()
    for arm in ["original", *p["arms"]]:
        for probe in ("linear", "mlp"):
            key = f"heldout_probe_accuracy.fact.{probe}.last"
            r = v.row(arm, key)
            assert 0 <= r.ci_low <= r.value <= r.ci_high <= 1 and r.chance == pytest.approx(1 / p["n_targets"])
    # the original model names the city in the prompt: its fact probe reads held-out templates well above chance
    assert v.value("original", "heldout_probe_accuracy.fact.linear.last") > 1 / p["n_targets"] + 0.2
    lens = pd.read_csv(out / "tables" / "04_logit_lens.csv")
    # at the last layer the logit lens is the model's own next-token prediction: the original recalls the targets
    last = lens[(lens.arm == "original") & (lens.layer == n_layers - 1)].answer_top1.iloc[0]
    assert last >= v.value("original", "targets.no_context_recall.train") - 0.35
    for fig in ("04_probe_accuracy_by_layer", "04_logit_lens", "05_fig1_tsne_cities_fruits", "05_fig2_type_centroids_pca"):
        assert (out / "figures" / f"{fig}.png").exists()


def test_collapse_attention_and_gsm8k_measures(smoke_run):
    import numpy as np
    import pandas as pd

    out, _, _ = smoke_run
    p = load_profile("smoke")
    v = _view(out)
    for arm in ["original", *p["arms"]]:
        for ctx in ("entity", "question"):
            assert 0 <= v.value(arm, f"collapse.{ctx}.identity_nn.fruit") <= 1
            assert -1 <= v.value(arm, f"collapse.{ctx}.silhouette") <= 1
            assert v.value(arm, f"collapse.{ctx}.within_to_between") > 0
        assert 0 <= v.value(arm, "attention.evidence_weight.target") <= 1
        # entropies in nats of distributions over at most ~100 prompt tokens: within [0, ln 100]
        assert 0 <= v.value(arm, "attention.entropy_context.target") <= 4.61
        assert 0 <= v.value(arm, "gsm8k.correct") <= 1 and v.value(arm, "gsm8k.n_tokens") <= p["gsm8k_max_new_tokens"] + 1
    # the original model's types are separable on held-out entities (cities vs fruits vs numbers)
    assert v.value("original", "collapse.entity.type_probe_heldout_entities") > 0.5
    gens = pd.read_csv(out / "tables" / "07_gsm8k_generations_original.csv", keep_default_na=False)
    assert len(gens) == p["gsm8k_n_problems"] and (gens.generation.str.len() > 0).all()
    # no infinite geometry values (a ratio of two zero distances is undefined, written as empty)
    geometry = pd.read_csv(out / "tables" / "05_geometry_by_layer.csv")
    assert not np.isinf(geometry.select_dtypes("number").to_numpy()).any()


def test_unlearning_benchmark_trains_its_arms_and_measures_every_arm(smoke_run):
    import pandas as pd

    from rlcp_utils.training import loop

    out, _, _ = smoke_run
    p = load_profile("smoke")
    for arm in p["benchmark_arms"]:
        for seed in p["seeds"]:
            log = pd.read_csv(out / "jobs" / arm / f"seed{seed}" / "train_log.csv")
            assert list(log.columns) == loop.LOG_FIELDS + loop.FIELD_LOG_FIELDS
    # the smoke profile trains some of the field's arms (all of them train through train_arm in test_unlearning)
    if "rmu" in p["benchmark_arms"]:
        assert (pd.read_csv(out / "jobs" / "rmu" / "seed0" / "train_log.csv").l_rmu > 0).all()
    for arm in {"selective_rlcp", "grad_diff", "npo"} & set(p["benchmark_arms"]):
        assert (pd.read_csv(out / "jobs" / arm / "seed0" / "train_log.csv").l_retain > 0).all()
    v = _view(out)
    held_out = len(facts.split_retain(facts.read_jsonl(out / "data" / "retain.jsonl"))[1])
    top = max(p["relearn_steps"])
    for arm in ["original", *p["arms"], *p["benchmark_arms"]]:
        r = v.row(arm, "retain_heldout.no_context_recall.heldout")
        assert 0 <= r.ci_low <= r.value <= r.ci_high <= 1 and r.n_units == held_out
        assert r.n_seeds == (0 if arm == "original" else len(p["seeds"]))
        for key in ("fluency.names_a_country.targets", "fluency.degenerate.targets"):
            assert 0 <= v.value(arm, key) <= 1
        assert v.value(arm, "lm_loss.ratio_to_original") > 0
        # the country probe on the targets: 04's rule for every arm (04 the paper's arms, 10 the benchmark's)
        assert v.chance(arm, "heldout_probe_accuracy.country_target.linear.city") == pytest.approx(1 / p["n_targets"])
        if arm != "original":
            assert 0 <= v.value(arm, f"relearn.recall.step{top}") <= 1 and 0 <= v.value(arm, "benign_relearn.targets_recall") <= 1
    assert v.value("original", "lm_loss.ratio_to_original") == pytest.approx(1.0)
    # the original recalls its known facts in free text too: its answers name a country
    assert v.value("original", "fluency.names_a_country.targets") >= 0.5
    # 08 trains and measures forgetting and collateral damage, 09 relearns, 10 checks fluency, loss and probe
    from rlcp_utils.core import results

    arms = ["original", *p["arms"], *p["benchmark_arms"]]
    record = results.load_dir(out / "results").query("arm in @arms")
    owner = {"relearn.": "09_relearning", "benign_relearn.": "09_relearning", "fluency.": "10_unlearning_checks",
             "lm_loss.": "10_unlearning_checks",
             "retain_heldout.": "08_unlearning", "quant.": "09_relearning"}
    for prefix, notebook in owner.items():
        assert set(record[record.metric.str.startswith(prefix)].notebook) == {notebook}, prefix
    probe = record[record.metric.str.startswith("heldout_probe_accuracy.country_target.linear.")]
    assert {a: set(d.notebook) for a, d in probe.groupby("arm")} == {
        **{a: {"04_probing"} for a in ["original", *p["arms"]]}, **{a: {"10_unlearning_checks"} for a in p["benchmark_arms"]}}
    # their measures of trained weights are cached analyses, one table per model
    for arm in arms:
        # 09 attacks every trained arm; the original's recall is 01's per-prompt rows, not measured again
        assert (out / "analyses" / "09_relearning" / f"{arm}.csv").exists() == (arm != "original")
        for name in ("fluency", "lm_loss") + (("country_probe",) if arm not in p["arms"] else ()):
            assert (out / "analyses" / "10_unlearning_checks" / f"{name}_{arm}.json").exists()
    assert (out / "figures" / "09_relearning.png").exists()
    # 09's quantization attack: every model of quant_arms through each format, its weight change; the original sits
    # on the shipped grid
    quantized = ["original"] + [a for a in arms if a in p["quant_arms"]]
    assert len(quantized) == 2 and not (out / "analyses" / "09_relearning" / "just_rag_quantized.csv").exists()
    for arm in quantized:
        for name in ("quantized", "weight_change"):
            assert (out / "analyses" / "09_relearning" / f"{arm}_{name}.csv").exists()
        for fmt in ["none", *p["quant_formats"]]:
            assert 0 <= v.value(arm, f"quant.{fmt}.targets.no_context_recall.heldout") <= 1
    assert v.value("original", "quant.original_off_grid_share") == 0
    for arm in quantized[1:]:
        assert v.value(arm, "quant.none.recovery") >= 0 and 0 <= v.value(arm, "quant.weight_change.share_under_half_step") <= 1
    assert (out / "figures" / "09_quantization.png").exists()
    # 10 writes the benchmark's table, figure and verdicts under their names of before the split (08_*)
    assert (out / "figures" / "10_pareto.png").exists() and (out / "tables" / "10_benchmark.md").exists()
    verdicts = pd.read_csv(out / "tables" / "10_claims.csv")
    assert len(verdicts) == 6 and set(verdicts.verdict) <= {"met", "partly", "not met", "inconclusive"}


def test_open_questions_train_their_sweeps_and_measure_each_part(smoke_run):
    import pandas as pd

    from rlcp_utils.core import results

    out, _, _ = smoke_run
    p = load_profile("smoke")
    # part 1: every KL setting is a job of its own name, next to (not instead of) 03's RLCP jobs
    kl_names = [f"rlcp_kl{v:g}" for v in p["kl_sweep"] if float(v) != float(p["lambda_kl"])]
    kl_names.append("rlcp_kl_off_answer" if p["kl_on_answer"] else "rlcp_kl_on_answer")
    for name in kl_names:
        for seed in p["kl_sweep_seeds"]:
            assert (out / "jobs" / name / f"seed{seed}" / "train_log.csv").exists(), name
    kl = pd.read_csv(out / "tables" / "11_kl_sweep.csv")
    assert set(kl.setting) == {"rlcp", *kl_names}
    # part 2: the monitored run measured at step 0 (the original) and after the last step, every pair
    monitor = pd.read_csv(out / "jobs" / "rlcp_gradients" / f"seed{p['seeds'][0]}" / "monitor.csv")
    cos = monitor[(monitor.measure == "cosine") & (monitor.group == "all")]
    assert cos.step.min() == 0 and cos.groupby("step").of.nunique().min() == 5
    assert ((cos.value >= -1) & (cos.value <= 1)).all()
    first_order = pd.read_csv(out / "tables" / "12_first_order.csv")
    assert (first_order.bound > 0).all() and set(first_order.step) == {"descent", "ascent"}
    # the claim's statistic is the table's worst |measured change| / bound, recomputed here from its columns (the
    # bound itself equals |first-order change| by construction: the unit tests check the step against it)
    record = results.load_dir(out / "results")
    for loss, rows in first_order[first_order["L moved"].isin(["logic", "gsm8k"])].groupby("L moved"):
        worst = record[(record.arm == "original") & (record.metric == f"gradients.first_order.{loss}.worst_ratio")].value
        assert float(worst.iloc[0]) == pytest.approx((rows.measured_change.abs() / rows.bound).max(), rel=1e-9)
    # part 3 and 4: one row per fact count (and 03's RLCP), and the arithmetic arms next to the original
    counts = pd.read_csv(out / "tables" / "13_fact_counts.csv")
    assert len(counts) == len(p["fact_counts"]) + 1
    arith = pd.read_csv(out / "tables" / "14_arithmetic.csv")
    assert list(arith.arm) == ["arith_original", "arith_just_rag", "arith_rlcp"]
    v = _view(out)
    assert v.row("arith_rlcp", "targets.no_context_recall.heldout").n_units == p["arith_n_targets"]
    for fig in ["11_kl_sweep", "12_gradients", "13_fact_counts", "14_arithmetic"]:
        assert (out / "figures" / f"{fig}.png").exists(), fig


def test_summary_rows_recompute_from_their_per_prompt_rows(smoke_run):
    """Every notebook with a recipe (study/recompute.py): some of its record rows, recomputed from the per-prompt rows
    it committed by formulas written apart from the notebook's, are the recorded values."""
    from rlcp_utils.study import recompute

    out, _, _ = smoke_run
    for nb in recompute.RECIPES:
        t = recompute.recompute(out, nb)
        assert len(t), f"{nb}: no record row recomputed"
        bad = t[t.abs_diff > 1e-9]
        assert bad.empty, f"{nb}: rows differ from their per-prompt rows:\n{bad.head().to_string()}"


def test_report_judges_every_claim(smoke_run):
    import pandas as pd

    out, _, _ = smoke_run
    claims = pd.read_csv(out / "tables" / "15_claims.csv")
    assert len(claims) >= 17
    assert set(claims.verdict) <= {"reproduced", "partly", "not reproduced", "inconclusive", "not measured", "met", "not met"}
    assert (claims.verdict != "not measured").all()  # the smoke profile trains every arm and runs every notebook
    report = (out / "report.md").read_text()
    assert "## Claims" in report and "figures/04_probe_accuracy_by_layer.png" in report


def test_executed_notebooks_show_their_figures_without_machine_paths_or_warnings(smoke_run):
    out, executed, _ = smoke_run
    for nb in study_notebooks():
        ran = nbformat.read(executed / nb.name, as_version=4)
        code = [c for c in ran.cells if c.cell_type == "code"]
        if any("plt.show()" in c.source for c in code):
            assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), nb.name
        text = json.dumps([c.get("outputs", []) for c in code])
        for marker in (str(REPO_ROOT), "site-packages", "/.venv/", str(out), "Warning:"):
            assert marker not in text, f"{nb.name} shows {marker!r}"


def test_results_files_are_readable_by_everyone(smoke_run):
    import stat

    out, _, _ = smoke_run
    files = [*(out / "results").glob("*.csv"), out / "manifest.json", out / "report.md", *(out / "data").glob("*"),
             *(out / "jobs").rglob("*.json")]
    assert files and all(stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044 for f in files)


def test_papermill_directly_with_a_profile_file_or_a_typo(smoke_run, tmp_path):
    """-f params/smoke.yaml runs the smoke profile (and the manifest says the run was direct); a misspelt
    parameter stops the notebook in its first cell with the known names."""
    import shutil

    out, _, _ = smoke_run
    outputs = tmp_path / "outputs"
    shutil.copytree(out, outputs / "smoke", ignore=shutil.ignore_patterns("checkpoints"))
    env = {**os.environ, "RLCP_OUTPUTS_DIR": str(outputs)}
    nb = str(REPO_ROOT / "notebooks" / "15_report.ipynb")
    ok = subprocess.run([sys.executable, "-m", "papermill", nb, str(tmp_path / "a.ipynb"), "-f", str(REPO_ROOT / "params" / "smoke.yaml"),
                         "--cwd", str(REPO_ROOT / "notebooks")], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "15_report: profile smoke" in (tmp_path / "a.ipynb").read_text()
    assert json.loads((outputs / "smoke" / "manifest.json").read_text())["notebooks"]["15_report"]["status"] == "direct"
    assert not (outputs / "default").exists()
    bad = subprocess.run([sys.executable, "-m", "papermill", nb, str(tmp_path / "b.ipynb"), "-p", "profle", "smoke"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "unknown notebook parameter(s) 'profle'" in bad.stderr + (tmp_path / "b.ipynb").read_text()
    assert not (outputs / "default").exists()
