"""What the study costs: each notebook's time on this machine, including runs that a session stopped and resumed.

    python -m rlcp_utils.study.cost --profile default    # writes outputs/bench/cost_<profile>.md and job_walls_<profile>.csv

A notebook's manifest records the wall time of its last run only. A long run resumes: the jobs that earlier runs
finished are reused, so the last run's wall time leaves them out (02_baselines on default: 67.4 min for 10 of its
18 jobs). This module adds them back:

1. Job walls, from the executor logs (`--executor local` or slurm; outputs/<profile>/executor_logs/, not committed):
   each job's start and end from submitit's log lines, its folder from the pickled submission, the number of times
   it was paused (SIGCONT lines: a paused job's wall overstates its cost). They are kept in
   outputs/bench/job_walls_<profile>.csv, merged with what earlier sessions recorded, so the logs may go.
2. A logged job counts for a notebook's cost when it trained the committed job: the job.json's finished time falls
   inside the logged interval. Jobs trained inline have no log; their job.json has the training time only.
3. Per notebook: the last run's wall (manifest) + the union of the intervals of the counted jobs that finished
   before that run began (two jobs at once overlap: the union is the wall they took) + the training time of
   inline jobs before that run (a lower bound: their scoring is not recorded).

A notebook whose last run was a `--rerun` (make reproduce RERUN=1: it reused every job and cached analysis whose key
was current; its manifest entry's `run_mode` says so) has no computing run in the manifest: this module names such
notebooks and writes nothing, so a rerun never overwrites the cost of the runs that computed the study.

The fp32 column scales the bf16 time by the bench's RLCP step ratio (fp32 ÷ bf16 autocast, outputs/bench/bench.json):
most of the study's time is training and scoring, whose cost scales like a step; it is an estimate, marked as such.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from rlcp_utils.core import config
from rlcp_utils.core.files import atomic_write_text
from rlcp_utils.core.outputs import markdown_table
from rlcp_utils.study.bench import STEP_BF16_KEY, STEP_DEFAULT_KEY

_STAMP = re.compile(r"^submitit \w+ \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\) - (.*)$")
WALL_COLUMNS = ["notebook", "dispatch", "log", "job", "start_utc", "end_utc", "wall_s", "completed", "pauses"]


def _utc(stamp: str) -> datetime:
    """submitit writes the worker's local time; the machines that run the study keep UTC (as job.json does)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def _job_of(submitted: Path) -> str | None:
    """'<arm>/<job folder>' of a pickled submission (the job's folder, relative to outputs/<profile>/jobs/)."""
    try:
        job = pickle.loads(submitted.read_bytes()).args[0]
    except Exception:  # a submission of other code, or not a training job: it is listed without a job
        return None
    folder = Path(str(job.folder))
    return f"{folder.parent.name}/{folder.name}"


def read_job_walls(log_root: Path) -> pd.DataFrame:
    """One row per worker log under log_root (<notebook>/<dispatch>/<id>_0_log.out)."""
    rows = []
    for log in sorted(log_root.glob("*/*/*_0_log.out")):
        dispatch, notebook = log.parent.name, log.parent.parent.name
        log_id = log.name.split("_")[0]
        start = end = None
        completed, pauses = False, 0
        for line in log.read_text(errors="replace").splitlines():
            m = _STAMP.match(line)
            if not m:
                continue
            when, what = _utc(m.group(1)), m.group(2)
            start = start or when
            end = when
            completed |= what.startswith("Job completed successfully")
            pauses += "Bypassing signal SIGCONT" in what
        if start is None:
            continue
        rows.append({"notebook": notebook, "dispatch": dispatch, "log": log_id,
                     "job": _job_of(log.parent / f"{log_id}_submitted.pkl"),
                     "start_utc": start.isoformat(), "end_utc": end.isoformat(),
                     "wall_s": (end - start).total_seconds(), "completed": completed, "pauses": pauses})
    return pd.DataFrame(rows, columns=WALL_COLUMNS)


def merged_walls(recorded: Path, fresh: pd.DataFrame) -> pd.DataFrame:
    """The recorded rows and the fresh ones; a log read again replaces its recorded row (it may have finished)."""
    old = pd.read_csv(recorded, dtype={"log": str, "dispatch": str}) if recorded.exists() else pd.DataFrame(columns=WALL_COLUMNS)
    both = pd.concat([old, fresh.astype({"log": str})], ignore_index=True)
    both = both.drop_duplicates(["notebook", "dispatch", "log"], keep="last")
    return both.sort_values(["notebook", "dispatch", "log"]).reset_index(drop=True)


def _union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    total, reach = 0.0, None
    for a, b in sorted(intervals):
        if reach is None or a > reach:
            total += (b - a).total_seconds()
            reach = b
        elif b > reach:
            total += (b - reach).total_seconds()
            reach = b
    return total


def _finished_jobs(profile_dir: Path) -> dict[str, dict]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in sorted((profile_dir / "jobs").glob("*/*/job.json"))}


def notebook_costs(profile_dir: Path, walls: pd.DataFrame) -> pd.DataFrame:
    """Per notebook of the manifest: the last run's wall, the jobs earlier runs trained (logged and inline), and
    the whole time; see the module's docstring for the rule."""
    manifest = json.loads((profile_dir / "manifest.json").read_text())
    finished = _finished_jobs(profile_dir)
    done = walls[walls["completed"].astype(bool) & walls["job"].notna()]
    rows = []
    for name, entry in manifest.get("notebooks", {}).items():
        last_wall = float(entry.get("wall_s") or 0.0)
        last_start = datetime.fromisoformat(entry["finished_utc"]) - pd.Timedelta(seconds=last_wall)
        earlier, inline, inline_s, paused = [], 0, 0.0, 0
        logs = done[done["notebook"] == name]
        logged = set()
        for r in logs.itertuples():
            info = finished.get(r.job)
            start, end = datetime.fromisoformat(r.start_utc), datetime.fromisoformat(r.end_utc)
            if info is None or not (start <= datetime.fromisoformat(info["finished_utc"]) <= end + pd.Timedelta(seconds=60)):
                continue  # this log trained a job that was later replaced (other code) or is not committed
            logged.add(r.job)
            if end <= last_start:
                earlier.append((start, end))
                paused += int(r.pauses)
        arms = {job.split("/")[0] for job in logs["job"]}
        for job, info in finished.items():
            # inline jobs of this notebook: same arm folder as its logged jobs, finished before the last run, no log
            if job in logged or job.split("/")[0] not in arms:
                continue
            if datetime.fromisoformat(info["finished_utc"]) <= last_start:
                inline += 1
                inline_s += float(info["train_seconds"])
        earlier_s = _union_seconds(earlier)
        rows.append({"notebook": name, "commit": (entry.get("git_commit") or "")[:7],
                     "precision": (entry.get("precision") or {}).get("precision", ""),
                     "last_run_min": last_wall / 60, "earlier_logged_jobs": len(earlier),
                     "earlier_logged_min": earlier_s / 60, "earlier_paused": paused,
                     "earlier_inline_jobs": inline, "earlier_inline_train_min": inline_s / 60,
                     "total_min": (last_wall + earlier_s + inline_s) / 60, "lower_bound": inline > 0 or paused > 0})
    return pd.DataFrame(rows)


def made_by_rerun(manifest: dict) -> list[str]:
    """The notebooks whose last run was a --rerun (study/pipeline.py RUN_MODES): their wall time is not a cost."""
    return [name for name, entry in manifest.get("notebooks", {}).items() if entry.get("run_mode") == "rerun"]


def fp32_over_bf16(bench_json: Path) -> float | None:
    """The bench's RLCP step in fp32 over the same step in bf16 autocast, both with the default threads (bench.py's
    settings_alternatives); None where the bench has no bf16 step. Below 1 where bf16 is the slower (no amx_bf16)."""
    if not bench_json.exists():
        return None
    settings = json.loads(bench_json.read_text()).get("settings", {})
    fp32, bf16 = settings.get(STEP_DEFAULT_KEY), settings.get(STEP_BF16_KEY)
    return fp32 / bf16 if fp32 and bf16 else None


def cost_markdown(costs: pd.DataFrame, ratio: float | None, profile: str) -> str:
    shown = pd.DataFrame({
        "notebook": "`" + costs["notebook"] + "`",
        "last run (min)": costs["last_run_min"].map("{:.1f}".format),
        "earlier runs' jobs (min)": [f"{m:.1f} ({n} logged" + (f", {p} paused" if p else "") + ")" + (f" + {t:.1f} ({i} inline, training only)" if i else "")
                                     for m, n, p, t, i in zip(costs["earlier_logged_min"], costs["earlier_logged_jobs"],
                                                              costs["earlier_paused"], costs["earlier_inline_train_min"],
                                                              costs["earlier_inline_jobs"])],
        "total (min)": [("≥ " if lb else "") + f"{t:.1f}" for t, lb in zip(costs["total_min"], costs["lower_bound"])],
        "commit": costs["commit"], "precision": costs["precision"]})
    if ratio:
        shown["fp32 estimate (min)"] = (costs["total_min"] * ratio).map("{:.0f}".format)
    shown = shown.set_index("notebook")
    total = costs["total_min"].sum()
    foot = (f"\nAll notebooks: {'≥ ' if costs['lower_bound'].any() else ''}{total:.1f} min ({total / 60:.1f} h) on profile "
            f"`{profile}`" + (f"; in fp32 about {total * ratio / 60:.1f} h (x{ratio:.2f}: the bench's RLCP step, fp32 ÷ bf16 "
                              "autocast, on the bench's machine; a CPU without AVX-512 may differ, and "
                              "the bench has not measured one)" if ratio else "") + ".\n")
    return markdown_table(shown) + "\n" + foot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    args = ap.parse_args(argv)
    profile_dir = config.outputs_root() / args.profile
    bench_dir = config.REPO_ROOT / "outputs" / "bench"
    reruns = made_by_rerun(json.loads((profile_dir / "manifest.json").read_text()))
    if reruns:
        print(f"error: {len(reruns)} notebook(s) of {profile_dir} last ran as a --rerun, which reused the trained jobs and "
              f"cached analyses: their wall times are not what computing them costs ({', '.join(reruns)}). "
              f"{bench_dir / f'cost_{args.profile}.md'} is left as it is (each row names the commit of the run it measured); "
              "to measure anew, run `make reproduce FORCE=1` (everything is recomputed), then `make cost`.", file=sys.stderr)
        return 2
    recorded = bench_dir / f"job_walls_{args.profile}.csv"
    walls = merged_walls(recorded, read_job_walls(profile_dir / "executor_logs"))
    walls.to_csv(recorded, index=False)
    costs = notebook_costs(profile_dir, walls)
    text = cost_markdown(costs, fp32_over_bf16(bench_dir / "bench.json"), args.profile)
    atomic_write_text(bench_dir / f"cost_{args.profile}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
