"""Training jobs: one (arm, seed) each, trained, evaluated and saved on its own; and loading arms for analysis.

    outputs/<profile>/jobs/<name>/seed<k>/        committed: job.json, results.csv, per_item.csv, train_log.csv
                                                  (and monitor.csv for a job trained with a monitor)
    outputs/<profile>/checkpoints/<name>/seed<k>/ not committed, first seed only: model.safetensors, probe.pt

A job's name is its arm's, except for the open-questions sweeps (09), which train an arm under other
parameters (`config.profile_with`) or on other facts and name each setting (for example 'rlcp_kl0').

A job is done when its job.json carries the current job key (every parameter that shapes training, the target
facts, the prompt format, the arm, the seed and the precision): a rerun loads its results instead of
training. An interrupted run loses at most the job in progress, since job.json is written last and each
folder is replaced atomically. Jobs are independent: any order, any subset. Trained weights stay on the
machine that trained them; an analysis that needs them on another machine retrains that one job
(`load_arm`), never the others.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from . import data, evaluate, results, train
from .config import BENCHMARK_TRAINING_PARAMETERS, params_through
from .model import precision_of  # noqa: F401 (07 calls jobs.precision_of)
from .notebook import force_recompute

# Parameters that list jobs rather than shape one: adding a seed or an arm leaves the other jobs' keys alone
_NOT_IN_JOB_KEY = {"seeds", "arms", "description"}


def job_dir(profile, arm: str, seed: int) -> Path:
    return profile.output_dir / "jobs" / arm / f"seed{seed}"


def weights_dir(profile, arm: str, seed: int) -> Path:
    return profile.output_dir / "checkpoints" / arm / f"seed{seed}"


def job_key(profile, arm: str, seed: int, study, extra=None) -> str:
    """What one trained model depends on. Analysis parameters (04 onwards) are left out: changing them never
    retrains an arm. `extra`: anything else a job's saved outputs depend on (a monitor's settings), as JSON."""
    shaping = {k: v for k, v in params_through(profile.params, 3).items() if k not in _NOT_IN_JOB_KEY}
    key = [shaping, [(t["city"], t["country"]) for t in study.targets], study.prompt_format, arm, seed, precision_of(profile)]
    if arm in train.BENCHMARK_ARMS:  # the benchmark's arms also depend on its weights and the training retain facts
        key.append([{k: profile[k] for k in BENCHMARK_TRAINING_PARAMETERS}, [r["city"] for r in data.split_retain(study.retain)[0]]])
    if extra is not None:
        key.append(extra)
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_job(profile, name: str, seed: int, key: str) -> dict | None:
    folder = job_dir(profile, name, seed)
    meta = folder / "job.json"
    if force_recompute() or not meta.exists():
        return None
    info = json.loads(meta.read_text())
    if info.get("job_key") != key:
        return None
    return info


def _train(profile, arm: str, seed: int, study, items, ref, log_path: Path | None, field=None, name: str | None = None,
           on_step=None):
    """Train one job from the original model; returns (model, tokenizer, probe, seconds). The weights are
    saved for the first training seed only, the model that the analyses (04-09) load: 0.5 GB per job."""
    from .model import folder_written_atomically, load_for, save_weights

    name = name or arm
    lm, tok = load_for(profile)
    weights = train.arm_weights(arm, profile)
    t0 = time.time()
    probe = train.train_arm(lm, items, len(study.targets), weights, train.settings_from_params(profile, seed), ref,
                            tok.pad_token_id, log_path, desc=f"train {name} seed {seed}", field=field, on_step=on_step)
    seconds = time.time() - t0
    if seed != profile["seeds"][0]:
        return lm, tok, probe, seconds
    with folder_written_atomically(weights_dir(profile, name, seed)) as tmp:
        save_weights(lm, tmp / "model.safetensors")
        torch.save(probe.state_dict(), tmp / "probe.pt")
        (tmp / "checkpoint.json").write_text(json.dumps({"arm": arm, "seed": seed, "job_key": job_key(profile, arm, seed, study),
                                                         "trained_utc": _now()}, indent=2))
    return lm, tok, probe, seconds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_job(profile, arm: str, seed: int, study, items, ref, field=None, name: str | None = None,
            notebook: str | None = None, monitor=None, key_extra=None) -> dict:
    """Train and evaluate one (arm, seed), or load its finished results. Returns {'rows': record rows,
    'per_item': DataFrame, 'seconds': training time, 'trained': bool, 'monitor': DataFrame or None}.
    `field`: train.FieldInputs, for the benchmark's arms. `name`: the job's folder (default: the arm);
    `notebook`: whose results the job's rows are (default: the arm's training notebook); `monitor(step, model)`:
    called along training (train.train_arm's on_step), returning rows that are saved as monitor.csv, with
    its settings in `key_extra` (part of the job key)."""
    from .model import folder_written_atomically

    P = profile
    name = name or arm
    key = job_key(P, arm, seed, study, key_extra)
    info = _read_job(P, name, seed, key)
    folder = job_dir(P, name, seed)
    if info is not None:
        return {"rows": results.read(folder / "results.csv").to_dict("records"),
                "per_item": pd.read_csv(folder / "per_item.csv", keep_default_na=False, na_values=[""]),
                "seconds": info["train_seconds"], "trained": False,
                "monitor": pd.read_csv(folder / "monitor.csv") if (folder / "monitor.csv").exists() else None}
    monitored: list[dict] = []
    on_step = None if monitor is None else (lambda step, model: monitored.extend(monitor(step, model)))
    with folder_written_atomically(folder) as tmp:
        lm, tok, probe, seconds = _train(P, arm, seed, study, items, ref, tmp / "train_log.csv", field, name, on_step)
        # rows are labelled with the job's name: a sweep setting is an arm of its own in the results record
        rows, per_item = evaluate.evaluate_arm(lm, tok, name, {"targets": study.targets, "retain": study.retain},
                                               study.questions, study.evidences, study.prompt_format, P["eval_batch_size"],
                                               P["n_bootstrap"], P["seed"], desc=f"evaluate {name} seed {seed}")
        adv_rows, adv_items = evaluate.adversary_accuracy(lm, probe, tok, study.targets, study.questions, study.prompt_format,
                                                          P["probe_layer"], P["eval_batch_size"], P["n_bootstrap"], P["seed"])
        record = evaluate.record_rows(rows + [{"arm": name, **r} for r in adv_rows], str(seed), 1)
        per_item = pd.DataFrame(per_item + [{"arm": name, **r} for r in adv_items]).assign(seed=seed)
        results.write(P, notebook or train_notebook(arm), record, path=tmp / "results.csv")
        per_item.to_csv(tmp / "per_item.csv", index=False)
        if monitor is not None:
            pd.DataFrame(monitored).to_csv(tmp / "monitor.csv", index=False)
        steps = len(train.epoch_schedule(items, len(study.targets), P["epochs"], P["batch_size"], seed))
        (tmp / "job.json").write_text(json.dumps({
            "arm": arm, "name": name, "seed": seed, "job_key": key, "train_seconds": round(seconds, 1), "steps": steps,
            "n_targets": len(study.targets), "precision": precision_of(P), "weights": vars(train.arm_weights(arm, P)),
            "settings": vars(train.settings_from_params(P, seed)), "finished_utc": _now()}, indent=2) + "\n")
    return {"rows": record, "per_item": per_item, "seconds": seconds, "trained": True,
            "monitor": pd.DataFrame(monitored) if monitor is not None else None}


def train_notebook(arm: str) -> str:
    """The notebook whose results an arm's jobs belong to."""
    if arm in train.BENCHMARK_ARMS:
        return "08_unlearning"
    return "03_rlcp_training" if arm == "rlcp" else "02_baselines"


def run_arm(profile, arm: str, study, items, ref, field=None) -> dict:
    """Every seed of one arm (run_job each), then the summary over seeds. Returns {'rows': per-seed and
    'all' rows, 'jobs': {seed: run_job result}}."""
    jobs = {seed: run_job(profile, arm, seed, study, items, ref, field) for seed in profile["seeds"]}
    seed_rows = pd.DataFrame([r for j in jobs.values() for r in j["rows"]])
    per_item = pd.concat([j["per_item"] for j in jobs.values()], ignore_index=True)
    summary = evaluate.summarize_seeds(per_item, seed_rows, profile["n_bootstrap"], profile["seed"])
    return {"rows": seed_rows.to_dict("records") + summary, "jobs": jobs}


def train_log(profile, arm: str, seed: int) -> pd.DataFrame:
    return pd.read_csv(job_dir(profile, arm, seed) / "train_log.csv")


def load_arm(profile, arm: str, study, seed: int | None = None, name: str | None = None):
    """The model of one arm for analysis: 'original', or the trained job (arm, seed) (folder `name`, default
    the arm); seed defaults to the profile's first training seed. Returns (model, tokenizer, probe or None).

    Weights are not committed: when this machine lacks them, the job is trained again here (same seed and
    settings), and the committed results of the job are left as they are."""
    from safetensors.torch import load_file

    from .model import load_for

    if arm == "original":
        lm, tok = load_for(profile)
        return lm, tok, None
    seed = profile["seeds"][0] if seed is None else seed
    name = name or arm
    key = job_key(profile, arm, seed, study)
    folder = weights_dir(profile, name, seed)
    meta = folder / "checkpoint.json"
    if not meta.exists() or json.loads(meta.read_text()).get("job_key") != key:
        print(f"the weights of {name} seed {seed} are not on this machine (they are not committed): training that job again")
        reference, tok = load_for(profile)
        items = train.make_train_items(tok, study.targets, study.questions, study.evidences, study.prompt_format)
        ref = train.ReferenceCache(reference, items, tok.pad_token_id, profile["kl_on_answer"])
        field = benchmark_inputs(profile, study, reference, tok, items) if arm in train.BENCHMARK_ARMS else None
        del reference
        lm, tok, probe, _ = _train(profile, arm, seed, study, items, ref, log_path=None, field=field, name=name)
        return lm, tok, probe
    lm, tok = load_for(profile)
    missing, unexpected = lm.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"checkpoint {folder} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    lm.tie_weights()
    probe_state = torch.load(folder / "probe.pt", map_location="cpu")
    probe = train.LinearProbe(*reversed(probe_state["linear.weight"].shape))
    probe.load_state_dict(probe_state)
    return lm, tok, probe.to(next(lm.parameters()).device)


def benchmark_inputs(profile, study, reference, tok, items) -> train.FieldInputs:
    """The benchmark arms' fixed inputs (train.FieldInputs): the training half of the retain facts
    (data.split_retain) as training items, and the frozen model's references for NPO and RMU."""
    retain_train, _ = data.split_retain(study.retain)
    retain_items = train.make_train_items(tok, retain_train, study.questions, study.evidences, study.prompt_format)
    return train.field_inputs(reference, items, retain_items, tok.pad_token_id, profile["rmu_steering_multiple"])


