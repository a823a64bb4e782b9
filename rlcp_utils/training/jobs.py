"""Training jobs: one (arm, seed) each, trained, evaluated and saved on its own; and loading arms for analysis.

    outputs/<profile>/jobs/<name>/seed<k>/        committed: job.json, results.csv, per_item.csv, train_log.csv
                                                  (and monitor.csv for a job trained with a monitor)
    outputs/<profile>/jobs/<name>/draw<d>_seed<k>/ the same for fact draw d > 0 (02 and 03 train every draw)
    outputs/<profile>/checkpoints/<name>/seed<k>/ not committed, first seed of draw 0 only: model.safetensors, probe.pt

A job's name is its arm's, except for the open-questions sweeps, which train an arm under other parameters
(`config.profile_with`) or on other facts and name each setting (for example 'rlcp_kl0').

A job is done when its job.json carries the current job key: every parameter that shapes training, the target
facts, the prompt format, the arm, the seed, the precision, and the hash of the code that trains and scores it
(`code_sha256`: the source files that this module imports, core.codehash). A rerun loads its results instead
of training; a job computed by other code is trained again. An interrupted run loses at most the job in
progress, since job.json is written last and each folder is replaced atomically. Jobs are independent: any
order, any subset. Trained weights stay on the machine that trained them; an analysis that needs them on
another machine retrains that one job (`load_arm`, which says so and shows its progress), never the others.
A `Job` is one (arm, seed) as settings and plain data, so that training.dispatch can send it to another process
or machine (RLCP_EXECUTOR); `run` trains it wherever it is.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from rlcp_utils.core import codehash, results
from rlcp_utils.core.config import BENCHMARK_TRAINING_PARAMETERS, Profile, params_through
from rlcp_utils.core.model import (
    folder_written_atomically,
    load_for,
    precision_of,
    save_weights,
)
from rlcp_utils.core.notebook import force_recompute
from rlcp_utils.data import facts
from rlcp_utils.data.facts import StudyData
from rlcp_utils.data.inputs import TrainingInputs, training_inputs
from rlcp_utils.measures import evaluate
from rlcp_utils.methods.common import LinearProbe
from rlcp_utils.methods.registry import method
from rlcp_utils.training import loop

# Parameters that list jobs rather than shape one: adding a seed or an arm leaves the other jobs' keys alone
_NOT_IN_JOB_KEY = {"seeds", "arms", "description"}
# The code a job runs: this module and everything it imports (training loop, methods, inputs, scoring), less the
# files that cannot change a job's numbers: parameters enter the key by value (config), and the rest writes
# manifests, prints progress or hashes code
JOB_CODE = [__name__]
NOT_JOB_CODE = {"core/config.py", "core/notebook.py", "core/outputs.py", "core/codehash.py", "core/progress.py"}


def job_dir(profile, arm: str, seed: int, draw: int = 0) -> Path:
    """A job's folder; draw 0's keep the name they had before fact draws were a factor."""
    return profile.output_dir / "jobs" / arm / (f"seed{seed}" if draw == 0 else f"draw{draw}_seed{seed}")


def weights_dir(profile, arm: str, seed: int) -> Path:
    """Saved weights: the analyses (04 onwards) load the first training seed of the study's draw (0) only."""
    return profile.output_dir / "checkpoints" / arm / f"seed{seed}"


def job_code_sha256() -> str:
    """The hash of the source files a training job runs (core.codehash over this module's imports)."""
    return codehash.digest({f: h for f, h in codehash.file_hashes(JOB_CODE).items() if f not in NOT_JOB_CODE})


def job_key(profile, arm: str, seed: int, study, extra=None) -> str:
    """What one trained model and its scores depend on. Analysis parameters (04 onwards) are left out:
    changing them never retrains an arm. `extra`: anything else a job's saved outputs depend on (a monitor's
    settings), as JSON."""
    shaping = {k: v for k, v in params_through(profile.params, 3).items() if k not in _NOT_IN_JOB_KEY}
    key = [shaping, [(t["city"], t["country"]) for t in study.targets], study.prompt_format, arm, seed, precision_of(profile),
           job_code_sha256(), _evaluation_inputs(study)]
    if method(arm).uses_field:  # the benchmark's arms also depend on its weights and the training retain facts
        key.append([{k: profile[k] for k in BENCHMARK_TRAINING_PARAMETERS}, [r["city"] for r in facts.split_retain(study.retain)[0]]])
    if extra is not None:
        key.append(extra)
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def study_inputs(profile, study, reference, tok, benchmark: bool = False, kl_on_answer: bool | None = None) -> TrainingInputs:
    """The TrainingInputs of the study's targets (data.inputs.training_inputs); `benchmark`: with the
    FieldInputs of the unlearning benchmark's arms (the training half of the retain facts)."""
    return training_inputs(reference, tok, study.targets, study.questions, study.evidences, study.prompt_format,
                           profile["kl_on_answer"] if kl_on_answer is None else kl_on_answer,
                           benchmark_retain=facts.split_retain(study.retain)[0] if benchmark else None,
                           rmu_multiple=profile["rmu_steering_multiple"])


def _evaluation_inputs(study) -> str:
    """A hash of what a job is scored on besides its targets: the retain facts and every question and evidence
    wording (a notebook may bring its own, as the arithmetic facts do)."""
    blob = json.dumps([[(r["city"], r["country"]) for r in study.retain],
                       [(q.id, q.text, q.split) for q in study.questions], [(e.id, e.text, e.split) for e in study.evidences]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finished_job(profile, name: str, seed: int, key: str, draw: int = 0) -> dict | None:
    """The job.json of a finished job with this key, else None (whatever RLCP_FORCE says: see _read_job)."""
    meta = job_dir(profile, name, seed, draw) / "job.json"
    if not meta.exists():
        return None
    info = json.loads(meta.read_text())
    return info if info.get("job_key") == key else None


def _read_job(profile, name: str, seed: int, key: str, draw: int = 0) -> dict | None:
    """A finished job to load instead of training; None under RLCP_FORCE (retrain everything)."""
    return None if force_recompute() else finished_job(profile, name, seed, key, draw)


def _loaded(folder: Path, info: dict) -> dict:
    """run_job's result for a finished job, read from its folder."""
    return {"rows": results.read(folder / "results.csv").to_dict("records"),
            "per_item": pd.read_csv(folder / "per_item.csv", keep_default_na=False, na_values=[""]),
            "seconds": info["train_seconds"], "trained": False,
            "monitor": pd.read_csv(folder / "monitor.csv") if (folder / "monitor.csv").exists() else None}


def _train(profile, arm: str, seed: int, study, inputs: TrainingInputs, log_path: Path | None, name: str | None = None,
           on_step=None):
    """Train one job from the original model; returns (model, tokenizer, probe, seconds). The weights are
    saved for the first training seed of the study's fact draw only, the model that the analyses load: 0.5 GB
    per job."""
    name = name or arm
    m = method(arm)
    lm, tok = load_for(profile)
    t0 = time.time()
    probe = loop.train_arm(lm, m, m.weights(profile), inputs, loop.settings_from_params(profile, seed), log_path,
                           desc=f"train {name} seed {seed}", on_step=on_step)
    seconds = time.time() - t0
    if seed != profile["seeds"][0] or study.draw != 0:
        return lm, tok, probe, seconds
    with folder_written_atomically(weights_dir(profile, name, seed)) as tmp:
        save_weights(lm, tmp / "model.safetensors")
        torch.save(probe.state_dict(), tmp / "probe.pt")
        (tmp / "checkpoint.json").write_text(json.dumps({"arm": arm, "seed": seed, "job_key": job_key(profile, arm, seed, study),
                                                         "trained_utc": _now()}, indent=2))
    return lm, tok, probe, seconds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_job(profile, arm: str, seed: int, study, inputs: TrainingInputs, name: str | None = None,
            notebook: str | None = None, monitor=None, key_extra=None) -> dict:
    """Train and evaluate one (arm, seed), or load its finished results. Returns {'rows': record rows,
    'per_item': DataFrame, 'seconds': training time, 'trained': bool, 'monitor': DataFrame or None}.
    `name`: the job's folder (default: the arm); `notebook`: whose results the job's rows are (default: the
    arm's training notebook); `monitor(step, model)`: called along training (loop.train_arm's on_step),
    returning rows that are saved as monitor.csv, with its settings in `key_extra` (part of the job key)."""
    P = profile
    name = name or arm
    key = job_key(P, arm, seed, study, key_extra)
    info = _read_job(P, name, seed, key, study.draw)
    folder = job_dir(P, name, seed, study.draw)
    if info is not None:
        return _loaded(folder, info)
    monitored: list[dict] = []
    on_step = None if monitor is None else (lambda step, model: monitored.extend(monitor(step, model)))
    with folder_written_atomically(folder) as tmp:
        lm, tok, probe, seconds = _train(P, arm, seed, study, inputs, tmp / "train_log.csv", name, on_step)
        # rows are labelled with the job's name: a sweep setting is an arm of its own in the results record
        rows, per_item = evaluate.evaluate_arm(lm, tok, name, {"targets": study.targets, "retain": study.retain},
                                               study.questions, study.evidences, study.prompt_format, P["eval_batch_size"],
                                               P["n_bootstrap"], P["seed"], desc=f"evaluate {name} seed {seed}")
        adv_rows, adv_items = evaluate.adversary_accuracy(lm, probe, tok, study.targets, study.questions, study.prompt_format,
                                                          P["probe_layer"], P["eval_batch_size"], P["n_bootstrap"], P["seed"])
        record = evaluate.record_rows(rows + [{"arm": name, **r} for r in adv_rows], str(seed), 1, study.draw)
        per_item = pd.DataFrame(per_item + [{"arm": name, **r} for r in adv_items]).assign(seed=seed, fact_draw=study.draw)
        results.write(P, notebook or method(arm).notebook, record, path=tmp / "results.csv")
        per_item.to_csv(tmp / "per_item.csv", index=False)
        if monitor is not None:
            pd.DataFrame(monitored).to_csv(tmp / "monitor.csv", index=False)
        steps = len(loop.epoch_schedule(inputs.items, inputs.n_classes, P["epochs"], P["batch_size"], seed))
        (tmp / "job.json").write_text(json.dumps({
            "arm": arm, "name": name, "seed": seed, "fact_draw": study.draw, "job_key": key, "code_sha256": job_code_sha256(),
            "train_seconds": round(seconds, 1), "steps": steps, "n_targets": len(study.targets), "precision": precision_of(P),
            "torch_threads": torch.get_num_threads(),  # the last bits of a job's numbers depend on it (not part of the key)
            "weights": vars(method(arm).weights(P)), "settings": vars(loop.settings_from_params(P, seed)),
            "finished_utc": _now()}, indent=2) + "\n")
    return {"rows": record, "per_item": per_item, "seconds": seconds, "trained": True,
            "monitor": pd.DataFrame(monitored) if monitor is not None else None}


@dataclass(frozen=True)
class Job:
    """One (arm, seed) to train and score, as settings and plain data: everything a worker in another process
    or on another machine needs (training.dispatch pickles it: a profile, names, facts and wordings; no model,
    no tensor). `name`: the job's folder (default: the arm); `notebook`: whose results its rows are (default:
    the arm's training notebook). `inputs`: the TrainingInputs the notebook already built, used when the job runs
    in the notebook's own process and never pickled; a worker builds the same from the job (`inputs_of`)."""
    profile: Profile
    arm: str
    seed: int
    study: StudyData
    name: str | None = None
    notebook: str | None = None
    inputs: TrainingInputs | None = field(default=None, compare=False, repr=False)

    @property
    def folder_name(self) -> str:
        return self.name or self.arm

    @property
    def draw(self) -> int:
        return self.study.draw

    @property
    def folder(self) -> Path:
        return job_dir(self.profile, self.folder_name, self.seed, self.draw)

    @property
    def key(self) -> str:
        return job_key(self.profile, self.arm, self.seed, self.study)

    def __getstate__(self) -> dict:
        # the inputs hold the frozen model's log-probabilities over the vocabulary (hundreds of MB): never shipped
        return {**self.__dict__, "inputs": None}


def inputs_of(job: Job) -> TrainingInputs:
    """The job's TrainingInputs: the notebook's, or built here from the frozen model as the notebook built them
    (the benchmark's FieldInputs for the arms that train on them, the profile's KL positions)."""
    if job.inputs is not None:
        return job.inputs
    reference, tok = load_for(job.profile)
    return study_inputs(job.profile, job.study, reference, tok, benchmark=method(job.arm).uses_field)


def run(job: Job) -> dict:
    """run_job for a Job: trains it (or loads it when finished) in this process."""
    if _read_job(job.profile, job.folder_name, job.seed, job.key, job.draw) is not None:
        return run_job(job.profile, job.arm, job.seed, job.study, None, job.name, job.notebook)
    return run_job(job.profile, job.arm, job.seed, job.study, inputs_of(job), job.name, job.notebook)


def load_finished(job: Job) -> dict | None:
    """run_job's result of a job that is finished (under any RLCP_FORCE), else None."""
    info = finished_job(job.profile, job.folder_name, job.seed, job.key, job.draw)
    return None if info is None else _loaded(job.folder, info)


def arm_jobs(profile, arms: list[str], studies: StudyData | list[StudyData], inputs: TrainingInputs | None = None) -> list[Job]:
    """Every (arm, fact draw, seed) of these arms under the profile's training seeds, in that order. `studies`:
    one draw's data or several (facts.load_study_draws); `inputs`: the notebook's TrainingInputs of the first
    of them (the others' are built where their jobs run)."""
    studies = studies if isinstance(studies, list) else [studies]
    return [Job(profile, arm, seed, study, inputs=inputs if i == 0 else None)
            for arm in arms for i, study in enumerate(studies) for seed in profile["seeds"]]


def summarize_arm(profile, runs: dict) -> dict:
    """One arm's (or sweep setting's) jobs ({seed: run_job result}) with its summary over seeds (two-level
    bootstrap: evaluate.summarize_seeds). Returns {'rows': per-seed and 'all' rows, 'summary': the 'all' rows,
    'jobs': runs}."""
    seed_rows = pd.DataFrame([r for j in runs.values() for r in j["rows"]])
    per_item = pd.concat([j["per_item"] for j in runs.values()], ignore_index=True)
    summary = evaluate.summarize_seeds(per_item, seed_rows, profile["n_bootstrap"], profile["seed"])
    return {"rows": seed_rows.to_dict("records") + summary, "summary": summary, "jobs": runs}


def original_scores(profile, draw: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """01_data's scores of the original model on one fact draw: its record rows and its per-prompt table."""
    record = results.read(results.results_dir(profile) / "01_data.csv")
    items = pd.read_csv(profile.output_dir / "tables" / "per_item_original.csv", keep_default_na=False, na_values=[""])
    return record[record.fact_draw == str(draw)], items[items.fact_draw == draw]


def summarize_draws(profile, by_draw: dict[int, dict]) -> list[dict]:
    """The summary over fact draws of one arm ({draw: summarize_arm result}): evaluate.summarize_draws, the
    draws as the outer unit of the interval. Empty for one draw (its summary over seeds is the arm's)."""
    if len(by_draw) < 2:
        return []
    per_item = pd.concat([j["per_item"] for s in by_draw.values() for j in s["jobs"].values()], ignore_index=True)
    return evaluate.summarize_draws(per_item, pd.DataFrame([r for s in by_draw.values() for r in s["summary"]]),
                                    profile["n_bootstrap"], profile["seed"])


def train_log(profile, arm: str, seed: int, draw: int = 0) -> pd.DataFrame:
    return pd.read_csv(job_dir(profile, arm, seed, draw) / "train_log.csv")


def load_arm(profile, arm: str, study, seed: int | None = None, name: str | None = None):
    """The model of one arm for analysis: 'original', or the trained job (arm, seed) (folder `name`, default
    the arm); seed defaults to the profile's first training seed. Returns (model, tokenizer, probe or None).

    Weights are not committed: when this machine lacks them (or they were trained by other code), the job is
    trained again here, with the same seed and settings; this says so, with the time it took when it was
    trained, and prints progress lines. The committed results of the job are left as they are."""
    if arm == "original":
        lm, tok = load_for(profile)
        return lm, tok, None
    seed = profile["seeds"][0] if seed is None else seed
    name = name or arm
    key = job_key(profile, arm, seed, study)
    folder = weights_dir(profile, name, seed)
    meta = folder / "checkpoint.json"
    if not meta.exists() or json.loads(meta.read_text()).get("job_key") != key:
        why = "are not on this machine (weights are not committed)" if not meta.exists() else "were trained by other code or settings"
        done = job_dir(profile, name, seed) / "job.json"
        took = f"; it took {json.loads(done.read_text())['train_seconds'] / 60:.1f} min when it was trained" if done.exists() else ""
        print(f"the weights of {name} seed {seed} {why}: training that job again here{took}", flush=True)
        reference, tok = load_for(profile)
        inputs = study_inputs(profile, study, reference, tok, benchmark=method(arm).uses_field)
        del reference
        lm, tok, probe, _ = _train(profile, arm, seed, study, inputs, log_path=None, name=name)
        return lm, tok, probe
    lm, tok = load_for(profile)
    missing, unexpected = lm.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"checkpoint {folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    lm.tie_weights()
    probe_state = torch.load(folder / "probe.pt", map_location="cpu")
    probe = LinearProbe(*reversed(probe_state["linear.weight"].shape))
    probe.load_state_dict(probe_state)
    return lm, tok, probe.to(next(lm.parameters()).device)
