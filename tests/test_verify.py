"""make verify: a committed job trained again from scratch is compared with its committed folder; a value or a
per-prompt decision out of tolerance is 'differs', a job this checkout would train differently is not checkable.

Training and scoring are the fast stand-ins of test_jobs (their own tests are in test_train and test_evaluate):
what is tested is what verify retrains, where it writes, and how it compares."""

import json

import pandas as pd
import pytest

from rlcp_utils.core import results
from rlcp_utils.core.config import load_profile
from rlcp_utils.study import verify
from rlcp_utils.training import jobs
from test_jobs import INPUTS, STUDY, fake  # noqa: F401  (the fixture)


@pytest.fixture
def committed(fake, monkeypatch):  # noqa: F811
    monkeypatch.setattr(verify.facts, "load_study_draws", lambda profile: [STUDY])
    monkeypatch.setattr(jobs, "inputs_of", lambda job: INPUTS)  # the stand-in training reads none of it
    profile = load_profile("smoke", {"precision": "fp32", "seeds": [0]})
    jobs.run(jobs.Job(profile, "rlcp", 0, STUDY))
    fake["trained"].clear()
    return profile, jobs.job_dir(profile, "rlcp", 0)


def test_a_retrained_job_equal_to_the_committed_one_is_reproduced(committed, fake):
    profile, folder = committed
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rec = verify.verify_job(profile, "rlcp/seed0")
    assert fake["trained"] == [("rlcp", 0)]  # trained again, not loaded from the committed folder
    assert rec["verdict"] == "reproduced" and rec["n_metrics"] == rec["n_metrics_ok"] > 0
    assert rec["max_abs_diff"] == 0 and rec["per_prompt"]["decisions_differing_share"] == 0
    assert rec["tolerance"] == verify.TOLERANCE["fp32"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the committed job is left as it was
    assert not list(profile.output_dir.glob("jobs/rlcp/.*"))


def test_a_value_or_a_decision_out_of_tolerance_differs(committed):
    profile, folder = committed
    record = pd.read_csv(folder / "results.csv")
    record.loc[0, "value"] += verify.TOLERANCE["fp32"] * 1.5
    record.to_csv(folder / "results.csv", index=False)
    rec = verify.verify_job(profile, "rlcp/seed0")
    assert rec["verdict"] == "differs" and rec["n_metrics_ok"] == rec["n_metrics"] - 1
    assert rec["max_abs_diff"] == pytest.approx(verify.TOLERANCE["fp32"] * 1.5)

    record.loc[0, "value"] -= verify.TOLERANCE["fp32"] * 1.5  # values back; one prompt of two flipped
    record.to_csv(folder / "results.csv", index=False)
    items = pd.read_csv(folder / "per_item.csv")
    items.loc[0, "correct"] = not items.loc[0, "correct"]
    items.to_csv(folder / "per_item.csv", index=False)
    rec = verify.verify_job(profile, "rlcp/seed0")
    assert rec["n_metrics_ok"] == rec["n_metrics"] and rec["per_prompt"]["decisions_differing_share"] == 0.5
    flipped = f"{items.loc[0, 'facts']}.{items.loc[0, 'condition']}"
    by_measure = rec["per_prompt"]["differing_by_measure"]
    assert by_measure[flipped]["differing"] == 1  # the flip is counted where it happened, and nowhere else
    assert sum(c["differing"] for c in by_measure.values()) == 1
    assert sum(c["of"] for c in by_measure.values()) == rec["per_prompt"]["paired"]
    assert f"{flipped} 1/" in verify.summary_table([rec])
    assert rec["verdict"] == "differs"


def test_a_job_this_checkout_would_train_otherwise_is_not_checkable(committed, fake):
    profile, folder = committed
    info = json.loads((folder / "job.json").read_text())
    (folder / "job.json").write_text(json.dumps({**info, "job_key": "made-by-other-code"}))
    rec = verify.verify_job(profile, "rlcp/seed0")
    assert rec["verdict"] == "not checkable" and "stale" in rec["why"] and fake["trained"] == []


def test_the_command_names_the_jobs_it_knows(committed, capsys):
    assert verify.main(["--profile", "smoke", "--job", "rlcp/seed7"]) == 2
    assert "no finished job 'rlcp/seed7'" in capsys.readouterr().err


def test_the_seed_range_counts_the_retrained_values_between_the_committed_seeds(tmp_path, monkeypatch):
    """Beside the verdict: how many retrained values lie within the committed seeds' min-max, per metric."""
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    profile = load_profile("smoke", {"seeds": [0, 1, 2]})
    for seed, (a, b) in enumerate([(0.2, 0.9), (0.4, 0.8), (0.3, 1.0)]):
        folder = jobs.job_dir(profile, "grad_diff", seed)
        folder.mkdir(parents=True)
        row = {c: "" for c in results.COLUMNS} | {"notebook": "08", "arm": "grad_diff", "seed": seed, "fact_draw": 0}
        pd.DataFrame([row | {"metric": "m.a", "value": a}, row | {"metric": "m.b", "value": b}]).to_csv(folder / "results.csv", index=False)
    record = {"job": "grad_diff/seed0", "fact_draw": 0, "n_metrics": 2,
              "metrics": [{"metric": "m.a", "retrained": 0.25}, {"metric": "m.b", "retrained": 0.75}]}
    assert verify.within_seed_range(profile, record) == "1/2 (3 seeds)"  # 0.25 in [0.2, 0.4]; 0.75 below 0.8
    record["metrics"][1]["retrained"] = 1.0  # the range's ends count as inside
    assert verify.within_seed_range(profile, record) == "2/2 (3 seeds)"
    assert verify.within_seed_range(profile, {"job": "grad_diff/seed0", "verdict": "not checkable"}) == ""


def test_a_job_verified_on_two_kinds_of_cpu_keeps_both_records():
    """The bf16 instructions decide the kernels: a record made on one kind must not replace one made on another."""
    names = {verify.record_name("rlcp/seed0", flags) for flags in (["amx_bf16", "avx512_bf16"], ["avx512_bf16"], [])}
    assert names == {"rlcp_seed0.amx_bf16.json", "rlcp_seed0.avx512_bf16.json", "rlcp_seed0.no_bf16.json"}
    rows = [{"job": "rlcp/seed0", "verdict": v, "machine_cpu_bf16_flags": f}
            for v, f in (("reproduced", ["amx_bf16", "avx512_bf16"]), ("differs", ["avx512_bf16"]))]
    table = verify.summary_table(rows)
    assert "amx_bf16, avx512_bf16" in table and table.count("rlcp/seed0") == 2
