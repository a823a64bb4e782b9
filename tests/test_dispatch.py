"""Where training jobs run (training/dispatch.py): the local executor's subprocesses and a mocked Slurm array give
the same job folders as the inline default; a killed job is reported with its logs and a rerun command, and is
rerun alone; the Slurm submission carries the configured parameters.

The jobs are real (training loop, evaluation, saving) on a tiny random-init Llama saved to disk with the tiny
tokenizer, so that a subprocess can load it by path: each job takes about a second, a subprocess a few more to
import torch and transformers."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import torch
import yaml
from submitit.core import submission
from submitit.core.test_core import MockedSubprocess
from transformers import AutoModelForCausalLM

from rlcp_utils.core import executor, model as model_mod
from rlcp_utils.core.config import load_profile
from rlcp_utils.core.model import tiny_config
from rlcp_utils.data import facts
from rlcp_utils.training import dispatch, jobs

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test workers below run in subprocesses

CITIES = [("Lima", "Peru"), ("Cairo", "Egypt"), ("Nairobi", "Kenya")]
RETAIN = [("Paris", "France"), ("Tokyo", "Japan")]
TRAINING_ONLY = ["seconds"]  # the one column of a train log that depends on the machine's speed


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = tiny_config("llama", vocab_size=len(tiny_tokenizer), pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def study_and_profile(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    monkeypatch.delenv("RLCP_FORCE", raising=False)
    monkeypatch.delenv(executor.EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(model_mod.PRECISION_ENV, raising=False)
    profile = load_profile("smoke", {"model": str(tiny_dir), "probe_layer": 2, "device": "cpu", "precision": "fp32",
                                     "seeds": [0, 1], "n_bootstrap": 50})
    study = facts.StudyData(
        targets=[{"city": c, "country": k, "label": i} for i, (c, k) in enumerate(CITIES)],
        retain=[{"city": c, "country": k} for c, k in RETAIN], probe_cities=[], controls=[],
        questions=facts.split_templates(facts.QUESTION_TEMPLATES[:4], 1, "q"),
        evidences=facts.split_templates(facts.EVIDENCE_TEMPLATES[:3], 1, "e"), prompt_format="chat")
    return profile, study


def use_executor(monkeypatch, tmp_path, **settings) -> None:
    path = tmp_path / "executor.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv(executor.EXECUTOR_ENV, str(path))


def job_files(profile, job_list) -> dict:
    """Every committed file of the jobs, as tables (train logs less their timing column) and job.json's settings."""
    out = {}
    for j in job_list:
        folder = jobs.job_dir(profile, j.folder_name, j.seed)
        for name in ("results.csv", "per_item.csv"):
            out[(j.folder_name, j.seed, name)] = pd.read_csv(folder / name)
        out[(j.folder_name, j.seed, "train_log.csv")] = pd.read_csv(folder / "train_log.csv").drop(columns=TRAINING_ONLY)
        info = json.loads((folder / "job.json").read_text())
        out[(j.folder_name, j.seed, "job.json")] = {k: info[k] for k in ("job_key", "steps", "precision", "settings", "weights")}
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], pd.DataFrame):
            pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=str(k))
        else:
            assert a[k] == b[k], k


def inline_reference(profile, job_list, tmp_path, monkeypatch, threads: int) -> dict:
    """The same jobs trained inline (with this many torch threads) in another outputs folder."""
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "inline-outputs"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dispatch.run_jobs(job_list, "test")
    finally:
        torch.set_num_threads(before)
    files = job_files(profile, job_list)
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    return files


def local_worker(job, context):
    """train_job, leaving its process id and start/end times next to the outputs (to see that two ran at once),
    except that the process of seed 1 is killed (as by the OOM killer) before it writes anything."""
    t0 = time.time()
    stamp = Path(os.environ["RLCP_OUTPUTS_DIR"]).parent / f"ran-{job.folder_name}-{job.seed}.json"
    if job.seed == 1:
        stamp.write_text(json.dumps({"pid": os.getpid(), "start": t0}))
        os.kill(os.getpid(), signal.SIGKILL)
    folder = dispatch.train_job(job, context)
    stamp.write_text(json.dumps({"pid": os.getpid(), "start": t0, "end": time.time()}))
    return folder


def test_settings_are_named_or_read_from_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv(executor.EXECUTOR_ENV, raising=False)
    assert executor.executor_settings().kind == "inline"
    assert executor.executor_settings("local").kind == "local"
    slurm = executor.executor_settings("slurm")
    assert slurm.kind == "slurm" and slurm.threads() == slurm.cpus_per_job
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: slurm\npartitio: gpu\n")
    with pytest.raises(ValueError, match="partitio"):
        executor.executor_settings(str(bad))
    with pytest.raises(FileNotFoundError, match="no such executor"):
        executor.executor_settings("pbs")
    with pytest.raises(ValueError, match="kind"):
        executor.ExecutorSettings(kind="pbs")


def test_a_job_pickles_without_its_inputs(study_and_profile):
    profile, study = study_and_profile
    job = jobs.Job(profile, "rlcp", 0, study, inputs=object())
    back = pickle.loads(pickle.dumps(job))
    assert back.inputs is None and back == job and back.key == job.key


def test_a_worker_takes_the_dispatching_process_precision(study_and_profile, monkeypatch):
    profile, _ = study_and_profile
    auto = load_profile("smoke", {"precision": "auto", "device": "cpu"})
    here = model_mod.precision_of(auto)
    other = "fp32" if here == "bf16" else "bf16"
    monkeypatch.setenv(model_mod.PRECISION_ENV, other)
    assert model_mod.precision_of(auto) == other  # 'auto' follows the dispatcher
    assert model_mod.precision_of(profile) == "fp32"  # an explicit setting does not


def test_local_runs_jobs_at_once_equal_to_inline_and_a_killed_job_is_reported_and_rerun_alone(study_and_profile, tmp_path,
                                                                                                  monkeypatch):
    profile, study = study_and_profile
    job_list = [jobs.Job(profile, "just_rag", 0, study), jobs.Job(profile, "rlcp", 0, study), jobs.Job(profile, "rlcp", 1, study)]
    # bitwise equality with inline needs the same torch thread count (with another count the last bits differ);
    # one thread per job: two jobs at once on two cores, without oversubscribing them
    reference = inline_reference(profile, job_list[:2], tmp_path, monkeypatch, threads=1)
    use_executor(monkeypatch, tmp_path, kind="local", workers=2, timeout_min=10, threads_per_job=1)
    monkeypatch.setattr(dispatch, "POLL_S", 0.5)
    with pytest.raises(dispatch.JobsFailed) as failed:
        dispatch.run_jobs(job_list, "test", worker=local_worker)

    # the first two ran at once in two other processes, and wrote what inline jobs write
    ran = [json.loads((tmp_path / f"ran-{j.folder_name}-{j.seed}.json").read_text()) for j in job_list[:2]]
    assert ran[0]["pid"] != ran[1]["pid"] and os.getpid() not in {r["pid"] for r in ran}
    assert ran[0]["start"] < ran[1]["end"] and ran[1]["start"] < ran[0]["end"], "the two jobs did not overlap"
    third = json.loads((tmp_path / "ran-rlcp-1.json").read_text())
    assert third["start"] >= min(r["end"] for r in ran), "a third job started while two were running (workers: 2)"
    assert_same(job_files(profile, job_list[:2]), reference)

    # the third was killed: reported with its logs and a command that reruns it alone; the others are kept
    message = str(failed.value)
    assert "1 of 3 jobs failed" in message and "rlcp seed 1" in message and "rlcp seed 0" not in message
    assert Path(message.split("logs: ")[1].split(" and ")[0]).parent.is_dir()
    assert not jobs.job_dir(profile, "rlcp", 1).exists()
    kept = (jobs.job_dir(profile, "rlcp", 0) / "job.json").read_text()
    command = message.split("rerun it alone: ")[1].split()
    assert command[:3] == [sys.executable, "-m", "rlcp_utils.training.dispatch"]
    threads, env = torch.get_num_threads(), dict(os.environ)
    try:
        dispatch.rerun(Path(command[3]))  # what the command runs (its __main__), here in this process
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(env)
    assert (jobs.job_dir(profile, "rlcp", 1) / "job.json").exists()
    assert (jobs.job_dir(profile, "rlcp", 0) / "job.json").read_text() == kept
    results = dispatch.run_jobs(job_list, "test", worker=local_worker)  # nothing left to send: no worker runs
    assert [r["trained"] for r in results] == [False, False, False]


def test_slurm_array_carries_the_settings_and_its_jobs_equal_inline(study_and_profile, tmp_path, monkeypatch):
    profile, study = study_and_profile
    job_list = [jobs.Job(profile, "just_rag", 0, study), jobs.Job(profile, "rlcp", 1, study)]
    reference = inline_reference(profile, job_list, tmp_path, monkeypatch, threads=3)
    settings = executor.ExecutorSettings(kind="slurm", partition="gpu", account="lab", gpus_per_job=1, cpus_per_job=3,
                                         mem_gb=8, timeout_min=30, array_parallelism=1, setup=["source /shared/venv/bin/activate"],
                                         additional={"reservation": "study"})
    threads, env = torch.get_num_threads(), dict(os.environ)
    mock = MockedSubprocess(known_cmds=["srun"])
    try:
        with mock.context():
            handles, folder = dispatch.submit(job_list, settings, "test")
            sbatch = handles[0].paths.submission_file.read_text()
            for line in ["--partition=gpu", "--account=lab", "--gpus-per-node=1", "--cpus-per-task=3", "--mem=8GB",
                         "--time=30", "--array=0-1%1", "--reservation=study", "--nodes=1"]:
                assert f"#SBATCH {line}" in sbatch, line
            assert "source /shared/venv/bin/activate" in sbatch
            for handle in handles:  # what each array task does on its node, here in this process
                assert handle.paths.submitted_pickle.stat().st_size < 200_000  # settings and facts, no model
                with mock.job_context(handle.job_id):
                    submission.process_job(handle.paths.folder)
                assert Path(handle.result()) == jobs.job_dir(profile, job_list[handles.index(handle)].folder_name,
                                                             job_list[handles.index(handle)].seed)
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(env)
    assert_same(job_files(profile, job_list), reference)
    assert (folder / "rlcp_seed1.job.pkl").exists()


def test_a_cpu_only_slurm_job_asks_for_no_gpu(tmp_path):
    with MockedSubprocess(known_cmds=["srun"]).context():
        cpu = dispatch.make_executor(executor.ExecutorSettings(kind="slurm", gpus_per_job=0), tmp_path, 3)
        gpu = dispatch.make_executor(executor.ExecutorSettings(kind="slurm", gpus_per_job=2), tmp_path, 3)
    assert "gpus_per_node" not in cpu._executor.parameters and gpu._executor.parameters["gpus_per_node"] == 2
    assert cpu._executor.parameters["array_parallelism"] == 3  # never more than the array's size

