"""The cost of a resumed notebook, on hand-made executor logs, job.json files and a manifest."""

import json
import pickle
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from rlcp_utils.study import cost


def _log(folder, log_id, lines, job_folder=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{log_id}_0_log.out").write_text("\n".join(lines) + "\n")
    if job_folder is not None:  # what submitit pickles: an object whose args[0] is the job
        (folder / f"{log_id}_submitted.pkl").write_bytes(pickle.dumps(SimpleNamespace(args=[SimpleNamespace(folder=job_folder)])))


def _line(clock, what):
    return f"submitit INFO (2026-12-03 {clock},123) - {what}"


def test_union_of_overlapping_intervals():
    t = lambda m: datetime(2026, 12, 3, 12, m, tzinfo=timezone.utc)
    # [0, 10] and [5, 20] overlap -> 20 min; [30, 35] apart -> +5; [31, 32] inside -> +0
    assert cost._union_seconds([(t(5), t(20)), (t(0), t(10)), (t(30), t(35)), (t(31), t(32))]) == 25 * 60


def test_a_resumed_notebook_adds_the_jobs_of_its_earlier_runs(tmp_path):
    root = tmp_path / "default"
    logs = root / "executor_logs" / "03_rlcp_training"
    # earlier run: two jobs at once, 12:00-12:20 and 12:01-12:21 (one paused); a third stopped unfinished
    _log(logs / "d1", "11", [_line("12:00:00", "Starting"), _line("12:20:00", "Job completed successfully")], root / "jobs/rlcp/seed0")
    _log(logs / "d1", "12", [_line("12:01:00", "Starting"), _line("12:05:00", "Bypassing signal SIGCONT"),
                             _line("12:21:00", "Job completed successfully")], root / "jobs/rlcp/seed1")
    _log(logs / "d1", "13", [_line("12:20:00", "Starting")], root / "jobs/rlcp/seed2")
    # a log whose job was trained again later (its job.json finished outside the interval): not counted
    _log(logs / "d0", "9", [_line("11:00:00", "Starting"), _line("11:10:00", "Job completed successfully")], root / "jobs/rlcp/draw1_seed0")
    # last run: 13:00-13:30, trains seed2 (logged inside it: not added again)
    _log(logs / "d2", "21", [_line("13:00:00", "Starting"), _line("13:25:00", "Job completed successfully")], root / "jobs/rlcp/seed2")
    finished = {"seed0": "12:19:58", "seed1": "12:20:59", "seed2": "13:24:59", "draw1_seed0": "12:50:00", "draw1_seed1": "12:40:00"}
    for name, clock in finished.items():
        (root / "jobs/rlcp" / name).mkdir(parents=True)
        (root / "jobs/rlcp" / name / "job.json").write_text(json.dumps(
            {"finished_utc": f"2026-12-03T{clock}+00:00", "train_seconds": 600.0}))
    (root / "manifest.json").write_text(json.dumps({"notebooks": {"03_rlcp_training": {
        "wall_s": 1800.0, "finished_utc": "2026-12-03T13:30:00+00:00", "git_commit": "abcdef0123", "precision": {"precision": "bf16"}}}}))

    walls = cost.read_job_walls(root / "executor_logs")
    assert set(walls["job"]) == {"rlcp/seed0", "rlcp/seed1", "rlcp/seed2", "rlcp/draw1_seed0"}
    assert walls.set_index("log").loc["12", "pauses"] == 1
    assert not walls.set_index("log").loc["13", "completed"]
    row = cost.notebook_costs(root, walls).iloc[0]
    assert row["earlier_logged_jobs"] == 2 and row["earlier_logged_min"] == pytest.approx(21.0)  # union 12:00-12:21
    # draw1_seed0 (its log trained an older job) and draw1_seed1 (no log) finished before 13:00: inline, training only
    assert row["earlier_inline_jobs"] == 2 and row["earlier_inline_train_min"] == pytest.approx(20.0)
    assert row["total_min"] == pytest.approx(30 + 21 + 20)
    assert row["lower_bound"]  # inline jobs' scoring is unknown, and one logged job was paused


def test_a_rerun_is_not_taken_for_a_cost(tmp_path, monkeypatch, capsys):
    """After make reproduce RERUN=1 the manifest holds the rerun's walls (jobs and cached analyses reused): make cost
    refuses, names the notebooks and leaves the committed cost file alone."""
    root = tmp_path / "default"
    root.mkdir()
    ran = {"wall_s": 60.0, "finished_utc": "2026-12-03T13:30:00+00:00", "git_commit": "abc", "precision": {"precision": "bf16"}}
    (root / "manifest.json").write_text(json.dumps({"notebooks": {
        "01_data": {**ran, "run_mode": "normal"}, "09_relearning": {**ran, "run_mode": "rerun"}}}))
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    committed = cost.config.REPO_ROOT / "outputs" / "bench" / "cost_default.md"
    before = committed.read_bytes()
    assert cost.main(["--profile", "default"]) == 2
    assert "last ran as a --rerun" in capsys.readouterr().err
    assert committed.read_bytes() == before
    assert cost.made_by_rerun(json.loads((root / "manifest.json").read_text())) == ["09_relearning"]


def test_a_log_read_again_replaces_its_recorded_row(tmp_path):
    logs = tmp_path / "logs" / "02_baselines"
    _log(logs / "d", "5", [_line("12:00:00", "Starting")], tmp_path / "jobs/just_rag/seed0")
    recorded = tmp_path / "walls.csv"
    cost.merged_walls(recorded, cost.read_job_walls(tmp_path / "logs")).to_csv(recorded, index=False)
    _log(logs / "d", "5", [_line("12:00:00", "Starting"), _line("12:10:00", "Job completed successfully")], tmp_path / "jobs/just_rag/seed0")
    _log(logs / "e", "6", [_line("13:00:00", "Starting")])
    merged = cost.merged_walls(recorded, cost.read_job_walls(tmp_path / "logs"))
    assert len(merged) == 2
    first = merged.set_index("log").loc["5"]
    assert bool(first["completed"]) and first["wall_s"] == 600


def test_the_fp32_ratio_reads_the_committed_bench_and_divides_the_right_steps(tmp_path):
    committed = cost.config.REPO_ROOT / "outputs" / "bench" / "bench.json"
    settings = json.loads(committed.read_text())["settings"]
    assert cost.fp32_over_bf16(committed) == pytest.approx(settings["rlcp_step_s_default"] / settings["rlcp_step_s_bf16_autocast"])
    fake = tmp_path / "bench.json"
    fake.write_text(json.dumps({"settings": {"rlcp_step_s_default": 3.0, "rlcp_step_s_bf16_autocast": 1.5}}))
    assert cost.fp32_over_bf16(fake) == 2.0  # fp32 twice as slow: an fp32 machine takes twice the time
    fake.write_text(json.dumps({"settings": {"rlcp_step_s_default": 3.0}}))
    assert cost.fp32_over_bf16(fake) is None and cost.fp32_over_bf16(tmp_path / "none.json") is None
