"""Does the committed code give the committed numbers? Retrain chosen training jobs from scratch and compare.

    python -m rlcp_utils.study.verify --profile default --job rlcp/seed0 --job grad_diff/seed0   # make verify

Each job named `<name>/<folder>` (a folder of outputs/<profile>/jobs/, e.g. `rlcp/seed0`, `just_rag/draw1_seed2`)
is trained again from the original model, in the precision it was committed in, into a temporary folder, scored
the same way, and its record rows (results.csv) and per-prompt scores (per_item.csv) are compared with the
committed ones. The record goes to outputs/<profile>/verify/<name>_<folder>.<CPU kind>.json (one per job and kind of
CPU bf16 instructions: amx_bf16, avx512_bf16 or no_bf16, so a job checked on two kinds keeps both) and verify/summary.md.

What "the same" means: every value of the job's record (accuracies and answer probabilities, all in [0, 1])
within TOLERANCE[precision] of the committed value, and at least 1 - TOLERANCE[precision] of the per-prompt
right/wrong decisions equal. Beside the verdict, the summary counts the retrained values that lie within the range
of the committed seeds (a scale for a difference across machines; it does not decide the verdict). On a CPU of the
kind that trained the job the numbers are identical (training and scoring are deterministic for a given number of
torch threads, which job.json records and verify uses); on another kind the last bits of bf16 arithmetic differ and
may flip a borderline prompt. A job can only be checked when this checkout
would train it the same way: its job key (parameters, facts, arm, seed, precision, code hash) must equal the
committed one, else it is reported as not checkable (stale: `make check`).

Not checked by this command: the other committed jobs (name them with --job), and what notebooks compute from
trained weights after training (04-14's analyses): rerun those with `make reproduce FORCE=1` (hours).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rlcp_utils.core import results
from rlcp_utils.core.config import ParameterError, load_profile
from rlcp_utils.core.model import PRECISION_ENV, cpu_bf16_flags
from rlcp_utils.core.files import atomic_write_text, write_json
from rlcp_utils.core.outputs import git_commit, markdown_table
from rlcp_utils.data import facts
from rlcp_utils.methods.registry import METHODS
from rlcp_utils.study.pipeline import environment
from rlcp_utils.study.tolerance import TOLERANCE
from rlcp_utils.training import jobs


def committed_job(profile, spec: str) -> tuple[Path, dict]:
    """The committed folder of a job named '<name>/<folder>' and its job.json."""
    folder = profile.output_dir / "jobs" / spec
    meta = folder / "job.json"
    if not meta.exists():
        known = sorted(str(p.parent.relative_to(profile.output_dir / "jobs")) for p in profile.output_dir.glob("jobs/*/*/job.json"))
        raise FileNotFoundError(f"no finished job {spec!r} in {profile.output_dir / 'jobs'}; finished jobs: {known[:12]}"
                                + (" ..." if len(known) > 12 else ""))
    return folder, json.loads(meta.read_text())


def compare(committed: Path, retrained: Path, tolerance: float) -> dict:
    """The comparison of two job folders: each record value side by side, and the per-prompt decisions."""
    old, new = results.read(committed / "results.csv"), results.read(retrained / "results.csv")
    both = old.merge(new, on=["arm", "seed", "metric"], how="outer", suffixes=("_committed", "_retrained"), indicator="side")
    rows = []
    for r in both.itertuples():
        a, b = r.value_committed, r.value_retrained
        diff = abs(float(a) - float(b)) if r.side == "both" else float("nan")
        rows.append({"metric": r.metric, "committed": None if pd.isna(a) else float(a),
                     "retrained": None if pd.isna(b) else float(b), "abs_diff": diff,
                     "ok": bool(r.side == "both" and diff <= tolerance)})
    keys = ["arm", "facts", "condition", "city", "question_id", "evidence_id"]
    items_old = pd.read_csv(committed / "per_item.csv", keep_default_na=False, na_values=[""])
    items_new = pd.read_csv(retrained / "per_item.csv", keep_default_na=False, na_values=[""])
    on = [k for k in keys if k in items_old.columns and k in items_new.columns]
    paired = items_old.merge(items_new, on=on, suffixes=("_committed", "_retrained"))
    same = (paired.correct_committed.astype(bool) == paired.correct_retrained.astype(bool))
    differ_share = float(1 - same.mean()) if len(paired) else float("nan")
    # where the flips are: a measure whose decisions sit near a boundary (a probe trained along with the model)
    # flips more on another machine than the answers do, and the record says which
    flips = (~same).groupby([paired.facts, paired.condition]).agg(["sum", "size"])
    by_measure = {f"{facts_}.{condition}": {"differing": int(n_flipped), "of": int(n)}
                  for (facts_, condition), (n_flipped, n) in flips.iterrows()}
    return {"metrics": rows, "n_metrics": len(rows), "n_metrics_ok": sum(r["ok"] for r in rows),
            "max_abs_diff": float(np.nanmax([r["abs_diff"] for r in rows])) if rows else float("nan"),
            "per_prompt": {"paired": int(len(paired)), "committed": int(len(items_old)), "retrained": int(len(items_new)),
                           "decisions_differing_share": differ_share, "differing_by_measure": by_measure,
                           "ok": bool(len(paired) == len(items_old) == len(items_new) and differ_share <= tolerance)}}


def verify_job(profile, spec: str) -> dict:
    """Retrain one committed job in a temporary outputs folder and compare it with the committed one."""
    folder, info = committed_job(profile, spec)
    record = {"job": spec, "arm": info["arm"], "seed": info["seed"], "fact_draw": info.get("fact_draw", 0),
              "precision": info.get("precision"), "committed_code_sha256": info.get("code_sha256"),
              "committed_train_seconds": info.get("train_seconds"), "committed_torch_threads": info.get("torch_threads"),
              "checkout_commit": git_commit(), "machine_cpu_bf16_flags": cpu_bf16_flags()}
    if spec.split("/")[0] != info["arm"] or info["arm"] not in METHODS:  # the folder of a sweep setting is not its arm
        return {**record, "verdict": "not checkable",
                "why": "a sweep setting of an open-questions notebook (its parameters and facts are set in that notebook): "
                       "rerun the notebook with make reproduce FORCE=1"}
    study = facts.load_study_draws(profile)[record["fact_draw"]]
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="rlcp-verify-"))
    # in the committed precision, whatever this machine would pick for 'auto' (slow where bf16 is emulated), and the
    # committed torch threads (the last bits of a job's numbers depend on them); the retrained job (and its weights)
    # go to a temporary folder, never over the committed one
    try:
        if info.get("torch_threads"):
            torch.set_num_threads(int(info["torch_threads"]))
        with environment(**{PRECISION_ENV: info.get("precision") or "", "RLCP_OUTPUTS_DIR": str(tmp)}):
            job = jobs.Job(profile, info["arm"], info["seed"], study)
            if job.key != info.get("job_key"):
                return {**record, "verdict": "not checkable",
                        "why": "this checkout would train it differently (its job key differs: other code, parameters, "
                               "facts or precision): the committed job is stale (make check); regenerate it first"}
            t0 = time.time()
            jobs.run(job)
            seconds = time.time() - t0
            tolerance = TOLERANCE[info["precision"]]
            comparison = compare(folder, jobs.job_dir(profile, job.folder_name, job.seed, job.draw), tolerance)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torch.set_num_threads(threads)
    ok = comparison["n_metrics_ok"] == comparison["n_metrics"] and comparison["per_prompt"]["ok"]
    return {**record, "tolerance": tolerance, "seconds": round(seconds, 1), **comparison,
            "verdict": "reproduced" if ok else "differs"}


def record_name(spec: str, cpu_flags: list[str]) -> str:
    """The file of a job's record on this kind of CPU: the bf16 instructions decide the kernels, hence the last bits."""
    kind = "amx_bf16" if "amx_bf16" in cpu_flags else "avx512_bf16" if "avx512_bf16" in cpu_flags else "no_bf16"
    return f"{spec.replace('/', '_')}.{kind}.json"


def within_seed_range(profile, record: dict) -> str:
    """How many of a retrained job's record values lie within the range of the committed seeds of its arm and fact
    draw (min to max): a scale for a difference across machines, beside the tolerance, which decides the verdict."""
    if "metrics" not in record:
        return ""
    name = record["job"].split("/")[0]
    folders = [jobs.job_dir(profile, name, seed, record.get("fact_draw", 0)) for seed in profile["seeds"]]
    found = [results.read(f / "results.csv") for f in folders if (f / "results.csv").exists()]
    if len(found) < 2:
        return ""
    span = pd.concat(found).groupby("metric").value.agg(["min", "max"])
    inside = [r for r in record["metrics"] if r["retrained"] is not None and r["metric"] in span.index
              and span.loc[r["metric"], "min"] <= r["retrained"] <= span.loc[r["metric"], "max"]]
    return f"{len(inside)}/{record['n_metrics']} ({len(found)} seeds)"


def summary_table(records: list[dict], profile=None) -> str:
    rows = [{"job": r["job"], "fact draw": r.get("fact_draw", 0), "precision": r.get("precision"), "verdict": r["verdict"],
             "record values within tolerance": f"{r['n_metrics_ok']}/{r['n_metrics']}" if "n_metrics" in r else "",
             "largest difference": f"{r['max_abs_diff']:.4f}" if "max_abs_diff" in r else "",
             "tolerance": r.get("tolerance", ""),
             "verified on (CPU bf16 instructions)": ", ".join(r.get("machine_cpu_bf16_flags") or ["none"]),
             "record values within the committed seeds' range": within_seed_range(profile, r) if profile is not None else "",
             "per-prompt decisions differing": (f"{r['per_prompt']['decisions_differing_share']:.1%} of "
                                                f"{r['per_prompt']['paired']}") if "per_prompt" in r else "",
             "where decisions differ": "; ".join(f"{m} {c['differing']}/{c['of']}" for m, c in
                                                 r.get("per_prompt", {}).get("differing_by_measure", {}).items() if c["differing"]),
             "minutes (committed / now)": (f"{r['committed_train_seconds'] / 60:.1f} / {r['seconds'] / 60:.1f}"
                                           if "seconds" in r and r.get("committed_train_seconds") else ""),
             "checkout": (r.get("checkout_commit") or "")[:12], "why not checked": r.get("why", "")} for r in records]
    return markdown_table(pd.DataFrame(rows).set_index("job")) + (
        "\n\nNot checked here: the committed jobs not named above, and the analyses notebooks compute from trained "
        "weights after training (`make reproduce RERUN=1` reruns them from this machine's weights, `FORCE=1` retrains "
        "those too).\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="name under params/ or a path to a YAML file")
    ap.add_argument("--job", action="append", required=True, help="a committed job, <name>/<folder> (repeatable)")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        specs = {s.strip("/"): committed_job(profile, s.strip("/"))[1] for s in args.job}
    except (ParameterError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = profile.sub("verify")
    records = []
    for spec, info in specs.items():
        print(f"verify {spec}: training it again from the original model (its committed training time: "
              f"{info.get('train_seconds', 0) / 60:.1f} min)", flush=True)
        rec = verify_job(profile, spec)
        write_json(out / record_name(spec, rec["machine_cpu_bf16_flags"]), rec)
        print(f"verify {spec}: {rec['verdict']}" + (f" ({rec['why']})" if "why" in rec else
              f"; {rec['n_metrics_ok']}/{rec['n_metrics']} values within {rec['tolerance']}, largest difference "
              f"{rec['max_abs_diff']:.4f}; per-prompt decisions differing: {rec['per_prompt']['decisions_differing_share']:.1%}"),
              flush=True)
        records.append(rec)
    # the summary covers every job verified so far on this profile, not only this invocation's
    atomic_write_text(out / "summary.md", summary_table([json.loads(p.read_text()) for p in sorted(out.glob("*.json"))], profile))
    print(f"written: {out / 'summary.md'}")
    return 0 if all(r["verdict"] == "reproduced" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
