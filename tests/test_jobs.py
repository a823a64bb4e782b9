"""Training jobs: one per (arm, seed), resumable on their own, keyed by what shapes training.

Training and evaluation are replaced by fast stand-ins here (their own tests are in test_train and
test_evaluate); what is tested is the bookkeeping: which jobs run, which are loaded, what a rerun redoes."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from rlcp_utils.core import results
from rlcp_utils.core.config import load_profile
from rlcp_utils.measures import evaluate
from rlcp_utils.training import dispatch, jobs

TARGETS = [{"city": c, "country": k, "label": i} for i, (c, k) in enumerate([("Lima", "Peru"), ("Cairo", "Egypt")])]
STUDY = SimpleNamespace(targets=TARGETS, retain=[], questions=[], evidences=[], prompt_format="chat", draw=0)
INPUTS = SimpleNamespace(items=[], n_classes=len(TARGETS))  # the stand-in training reads none of it


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("RLCP_FORCE", raising=False)
    trained = []

    def train(profile, arm, seed, study, inputs, log_path, name=None, on_step=None):
        if seed in fake_state["interrupt"]:
            raise KeyboardInterrupt(f"stopped while training {arm} seed {seed}")
        trained.append((name or arm, seed))
        if on_step is not None:
            for step in range(3):
                on_step(step, None)
        pd.DataFrame({"step": [0], "total": [float(seed)]}).to_csv(log_path, index=False)
        return None, None, None, 1.0

    def evaluate_arm(lm, tok, arm, fact_sets, *args, **kwargs):
        row = {"arm": arm, "facts": "targets", "metric": "no_context_recall.train", "value": 0.5, "ci_low": 0.0,
               "ci_high": 1.0, "chance": 0.0, "mean_answer_prob": 0.1, "n_facts": 2, "n_prompts": 2}
        items = [{"arm": arm, "facts": "targets", "condition": "no_context_recall.train", "city": t["city"],
                  "correct": i % 2 == 0, "answer_prob": 0.1} for i, t in enumerate(TARGETS)]
        return [row], items

    fake_state = {"interrupt": set(), "trained": trained}
    monkeypatch.setattr(jobs, "_train", train)
    monkeypatch.setattr(evaluate, "evaluate_arm", evaluate_arm)
    monkeypatch.setattr(evaluate, "adversary_accuracy", lambda *a, **k: ([], []))
    monkeypatch.setattr(jobs.loop, "epoch_schedule", lambda *a, **k: [[0]])
    return fake_state


def test_an_interrupted_job_is_retrained_alone(fake):
    profile = load_profile("smoke", {"precision": "fp32", "seeds": [0, 1, 2]})
    fake["interrupt"] = {1}
    with pytest.raises(KeyboardInterrupt):
        dispatch.run_arms(profile, ["rlcp"], STUDY, INPUTS)["rlcp"]
    assert fake["trained"] == [("rlcp", 0)]
    assert (jobs.job_dir(profile, "rlcp", 0) / "job.json").exists()
    assert not jobs.job_dir(profile, "rlcp", 1).exists()  # the interrupted job left nothing under its name
    fake["interrupt"] = set()
    run = dispatch.run_arms(profile, ["rlcp"], STUDY, INPUTS)["rlcp"]
    assert fake["trained"] == [("rlcp", 0), ("rlcp", 1), ("rlcp", 2)]  # seed 0 loaded, 1 and 2 trained
    assert [j["trained"] for j in run["jobs"].values()] == [False, True, True]
    summary = [r for r in run["rows"] if r["seed"] == "all"]
    assert summary and all(r["n_seeds"] == 3 for r in summary)
    info = json.loads((jobs.job_dir(profile, "rlcp", 2) / "job.json").read_text())
    assert info["seed"] == 2 and info["precision"] == "fp32" and info["job_key"] == jobs.job_key(profile, "rlcp", 2, STUDY)


def test_force_retrains_finished_jobs(fake, monkeypatch):
    profile = load_profile("smoke", {"precision": "fp32", "seeds": [0]})
    dispatch.run_arms(profile, ["just_rag"], STUDY, INPUTS)["just_rag"]
    monkeypatch.setenv("RLCP_FORCE", "1")
    dispatch.run_arms(profile, ["just_rag"], STUDY, INPUTS)["just_rag"]
    assert fake["trained"] == [("just_rag", 0), ("just_rag", 0)]


def test_job_key_follows_what_shapes_training():
    p = load_profile("smoke", {"precision": "fp32"})
    key = jobs.job_key(p, "rlcp", 0, STUDY)
    assert key != jobs.job_key(p, "rlcp", 1, STUDY) and key != jobs.job_key(p, "just_rag", 0, STUDY)
    assert key != jobs.job_key(load_profile("smoke", {"precision": "bf16"}), "rlcp", 0, STUDY)
    assert key != jobs.job_key(load_profile("smoke", {"precision": "fp32", "lambda_kl": 1.0}), "rlcp", 0, STUDY)
    # listing more seeds or arms, or an analysis setting, leaves a job's key alone
    assert key == jobs.job_key(load_profile("smoke", {"precision": "fp32", "seeds": [0, 5]}), "rlcp", 0, STUDY)
    assert key == jobs.job_key(load_profile("smoke", {"precision": "fp32", "gsm8k_n_problems": 9}), "rlcp", 0, STUDY)
    other = SimpleNamespace(**{**vars(STUDY), "targets": TARGETS[:1]})
    assert key != jobs.job_key(p, "rlcp", 0, other)


def test_precision_resolution_is_explicit_or_measured(monkeypatch):
    from rlcp_utils.core import model

    assert model.resolve_precision("fp32", "cpu")["precision"] == "fp32"
    monkeypatch.setattr(model, "cpu_bf16_flags", lambda: [])
    model.resolve_precision.cache_clear()
    try:
        no_bf16 = model.resolve_precision("auto", "cpu")
        assert no_bf16["precision"] == "fp32" and "no native bf16" in no_bf16["reason"]
    finally:
        model.resolve_precision.cache_clear()
    with pytest.raises(ValueError):
        model.resolve_precision("fp16", "cpu")


def test_autocast_follows_the_models_precision(tiny_model):
    from rlcp_utils.core import batching

    ids = torch.tensor([[1, 2, 3]])
    tiny_model.rlcp_precision = "bf16"
    try:
        with batching.autocast(tiny_model):
            assert tiny_model(input_ids=ids).logits.dtype == torch.bfloat16
    finally:
        tiny_model.rlcp_precision = "fp32"
    with batching.autocast(tiny_model):
        assert tiny_model(input_ids=ids).logits.dtype == torch.float32


def test_a_sweep_job_keeps_its_own_name_key_and_monitor(fake):
    from rlcp_utils.core import config

    profile = load_profile("smoke", {"precision": "fp32", "seeds": [0]})
    dispatch.run_arms(profile, ["rlcp"], STUDY, INPUTS)["rlcp"]
    sweep = config.profile_with(profile, lambda_kl=0.0)
    assert sweep.name == profile.name and sweep["lambda_kl"] == 0.0 and profile["lambda_kl"] != 0.0
    monitor = lambda step, model: [{"step": step, "value": step * 2}] if step % 2 == 0 else []
    first = jobs.run_job(sweep, "rlcp", 0, STUDY, INPUTS, name="rlcp_kl0", notebook="11_kl_verbosity",
                         monitor=monitor, key_extra={"every": 2})
    assert fake["trained"] == [("rlcp", 0), ("rlcp_kl0", 0)] and first["trained"]
    assert list(first["monitor"].step) == [0, 2]
    again = jobs.run_job(sweep, "rlcp", 0, STUDY, INPUTS, name="rlcp_kl0", notebook="11_kl_verbosity",
                         monitor=monitor, key_extra={"every": 2})
    assert not again["trained"] and again["monitor"].equals(first["monitor"])  # loaded from monitor.csv
    assert set(again["rows"][0]) >= {"notebook"} and again["rows"][0]["notebook"] == "11_kl_verbosity"
    # another monitor setting is another job; the arm's own job was never touched
    jobs.run_job(sweep, "rlcp", 0, STUDY, INPUTS, name="rlcp_kl0", monitor=monitor, key_extra={"every": 3})
    assert fake["trained"][-1] == ("rlcp_kl0", 0) and len(fake["trained"]) == 3
    info = json.loads((jobs.job_dir(profile, "rlcp", 0) / "job.json").read_text())
    assert info["job_key"] == jobs.job_key(profile, "rlcp", 0, STUDY) != jobs.job_key(sweep, "rlcp", 0, STUDY)
    with pytest.raises(config.ParameterError):
        config.profile_with(profile, lambda_kl=-1.0)


def test_every_fact_draw_is_a_job_of_its_own_and_the_arm_is_summarized_over_draws(fake, monkeypatch):
    profile = load_profile("smoke", {"precision": "fp32", "seeds": [0, 1]})
    other = SimpleNamespace(targets=[{"city": "Quito", "country": "Ecuador", "label": 0}, {"city": "Oslo", "country": "Norway", "label": 1}],
                            retain=[], questions=[], evidences=[], prompt_format="chat", draw=1)
    built = []  # a draw other than the notebook's builds its own inputs where its job runs
    monkeypatch.setattr(jobs, "inputs_of", lambda job: built.append(job.draw) or job.inputs or INPUTS)
    job_list = jobs.arm_jobs(profile, ["rlcp"], [STUDY, other], INPUTS)
    assert [(j.draw, j.seed, j.inputs is INPUTS) for j in job_list] == [(0, 0, True), (0, 1, True), (1, 0, False), (1, 1, False)]
    assert jobs.job_dir(profile, "rlcp", 0, 1).name == "draw1_seed0" and jobs.job_dir(profile, "rlcp", 0).name == "seed0"
    assert job_list[0].key != job_list[2].key  # other facts, other job
    run = dispatch.run_arms(profile, ["rlcp"], [STUDY, other], INPUTS)["rlcp"]
    assert len(fake["trained"]) == 4 and built.count(1) == 2
    info = json.loads((jobs.job_dir(profile, "rlcp", 1, 1) / "job.json").read_text())
    assert info["fact_draw"] == 1 and info["job_key"] == job_list[3].key
    record = results.frame(run["rows"], "03_rlcp_training")  # one row per (seed, draw, metric): no duplicate
    per_draw = record[(record.seed == "all") & (record.fact_draw != "all")]
    assert sorted(per_draw.fact_draw) == ["0", "0", "1", "1"] and set(record[record.seed != "all"].fact_draw) == {"0", "1"}
    over = record[record.fact_draw == "all"]
    assert len(over) == 2 and set(over.n_draws) == {2} and set(over.seed) == {"all"}  # recall and its answer probability
    assert all(r["fact_draw"] == "all" for r in run["summary"]) and set(run["by_draw"]) == {0, 1}
    assert list(run["jobs"]) == [0, 1]  # the study's draw
    again = dispatch.run_arms(profile, ["rlcp"], [STUDY, other], INPUTS)["rlcp"]
    assert len(fake["trained"]) == 4 and not any(j["trained"] for s in again["by_draw"].values() for j in s["jobs"].values())
    numbers = ["arm", "seed", "fact_draw", "metric", "value", "ci_low", "ci_high", "n_seeds", "n_draws"]  # loaded = trained
    pd.testing.assert_frame_equal(results.frame(again["rows"], "03")[numbers], record[numbers], check_dtype=False)
