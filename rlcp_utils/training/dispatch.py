"""Training jobs run where RLCP_EXECUTOR says (core/executor.py): in the notebook's process (inline, the default),
as subprocesses of this machine (local) or as a Slurm job array (slurm); the notebook gathers the results the
same way whichever it is.

Local and Slurm jobs are run by submitit (https://github.com/facebookincubator/submitit): a job is a pickled
`jobs.Job` (a profile, names, facts and wordings: never a model or a tensor) plus a `WorkerContext` (the
dispatching process's precision choice, outputs and cache folders, force flag, thread count). A worker builds the
job's training inputs from the frozen model, trains and scores the job with `jobs.run`, and writes its folder
exactly as an inline job does; the notebook then loads every job's results from the folders (`jobs.load_finished`).

Resume: jobs that are finished under their current key (code hash included) are never sent. Failure: a job that
raises, is killed or runs out of time is reported once every other job has ended, with its log files and a
command that reruns it alone; the finished jobs' folders stay, so rerunning the notebook sends only the
failed ones. Numbers: a job's results are bitwise those of the same job inline when it runs with the same torch
thread count and precision (the precision travels with the job; threads are a setting, threads_per_job).
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlcp_utils.core.config import outputs_root
from rlcp_utils.core.executor import EXECUTOR_ENV, ExecutorSettings, executor_settings
from rlcp_utils.core.model import PRECISION_ENV, precision_of
from rlcp_utils.core.notebook import FORCE_ENV, force_recompute
from rlcp_utils.core.progress import Progress
from rlcp_utils.training import jobs

try:  # an optional dependency (pip install 'rlcp[cluster]'): the inline default needs nothing
    import submitit
except ImportError:  # pragma: no cover - exercised only where submitit is missing
    submitit = None

# what a worker takes over from the dispatching process's environment (a Slurm node may have another one)
_SHARED_ENV = ("RLCP_OUTPUTS_DIR", "RLCP_CACHE_DIR", FORCE_ENV)
POLL_S = 2.0


@dataclass(frozen=True)
class WorkerContext:
    """What a worker takes from the process that dispatched its job, so that it trains what that process would:
    the precision that 'auto' resolved to there (it enters the job key), the outputs and cache folders, the
    force flag, and its torch thread count."""
    precision: str
    threads: int
    env: dict

    def apply(self) -> None:
        os.environ.update(self.env)
        os.environ[PRECISION_ENV] = self.precision
        torch.set_num_threads(self.threads)


def train_job(job: jobs.Job, context: WorkerContext) -> str:
    """A worker's whole task: train and score one job into its folder; returns the folder."""
    context.apply()
    jobs.run(job)
    return str(job.folder)


class JobsFailed(RuntimeError):
    """Some jobs of a dispatch failed; the others' results are kept."""


def run_jobs(job_list: list[jobs.Job], desc: str, worker=train_job) -> list[dict]:
    """Train (or load) every job where RLCP_EXECUTOR says; returns their run_job results in order. `desc` names
    the batch in progress lines and log folders (the notebook). `worker`: the function a subprocess runs (tests)."""
    settings = executor_settings()
    if settings.kind == "inline":
        return [jobs.run(j) for j in job_list]
    pending = [j for j in job_list if force_recompute() or jobs.finished_job(j.profile, j.folder_name, j.seed, j.key, j.draw) is None]
    pending = list({(j.folder, j.key): j for j in pending}.values())  # a job listed twice is sent once
    if pending:
        _run_elsewhere(pending, settings, desc, worker)
    trained = {j.folder for j in pending}
    out = []
    for j in job_list:
        result = jobs.load_finished(j)
        if result is None:  # pragma: no cover - a worker returned without writing its job
            raise RuntimeError(f"job {_label(j)} reported success but left no finished job.json")
        out.append({**result, "trained": j.folder in trained})
    return out


def run_arms(profile, arms: list[str], studies, inputs=None, desc: str | None = None) -> dict:
    """Every seed of every arm on every fact draw given (`studies`: one StudyData or a list, draw 0 first; one
    dispatch), then each arm's summary over seeds per draw and, for several draws, over the draws.
    Returns {arm: {'rows': every row (per seed, per draw, over draws), 'summary': the arm's summary rows (over
    the draws when there are several), 'jobs': {seed: run_job result} of the first draw, 'by_draw': {draw:
    jobs.summarize_arm result}}}."""
    job_list = jobs.arm_jobs(profile, arms, studies, inputs)
    results = run_jobs(job_list, desc or "+".join(arms))
    by_arm: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for j, r in zip(job_list, results):
        by_arm[j.arm].setdefault(j.draw, {})[j.seed] = r
    out = {}
    for arm, runs in by_arm.items():
        by_draw = {d: jobs.summarize_arm(profile, seeds) for d, seeds in runs.items()}
        over_draws = jobs.summarize_draws(profile, by_draw)
        first = by_draw[min(by_draw)]
        out[arm] = {"rows": [r for s in by_draw.values() for r in s["rows"]] + over_draws,
                    "summary": over_draws or first["summary"], "jobs": first["jobs"], "by_draw": by_draw}
    return out


def log_folder(settings: ExecutorSettings, profile, desc: str) -> Path:
    """A new folder per dispatch (submitit names local jobs by process id, which the system reuses)."""
    root = Path(settings.log_dir) if settings.log_dir else profile.output_dir / "executor_logs"
    return root / desc / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def make_executor(settings: ExecutorSettings, folder: Path, n_jobs: int):
    """The submitit executor of these settings, with every parameter set."""
    if submitit is None:
        raise ImportError(f"{EXECUTOR_ENV}={settings.kind} needs submitit: pip install 'submitit>=1.5' (or the package's "
                          "'cluster' extra)")
    if settings.kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=settings.timeout_min)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    optional = {f"slurm_{k}": v for k, v in (("partition", settings.partition), ("account", settings.account),
                                              ("qos", settings.qos), ("constraint", settings.constraint)) if v}
    if settings.gpus_per_job:  # no --gpus-per-node=0 line: clusters without GPU resources reject it
        optional["gpus_per_node"] = settings.gpus_per_job
    executor.update_parameters(
        name="rlcp", timeout_min=settings.timeout_min, nodes=1, tasks_per_node=1, cpus_per_task=settings.cpus_per_job,
        mem_gb=settings.mem_gb, slurm_array_parallelism=min(settings.array_parallelism, n_jobs),
        slurm_setup=list(settings.setup), slurm_additional_parameters=dict(settings.additional), **optional)
    return executor


def context_for(settings: ExecutorSettings, profile) -> WorkerContext:
    return WorkerContext(precision=precision_of(profile), threads=settings.threads(),
                         env={k: os.environ[k] for k in _SHARED_ENV if k in os.environ})


def _label(job: jobs.Job) -> str:
    return f"{job.folder_name} seed {job.seed}" + (f" (fact draw {job.draw})" if job.draw else "")


def _spec_path(folder: Path, job: jobs.Job) -> Path:
    return folder / f"{job.folder_name}_{job.folder.name}.job.pkl"


def submit(job_list: list[jobs.Job], settings: ExecutorSettings, desc: str, worker=train_job) -> tuple[list, Path]:
    """Send the jobs (slurm: one array; local: the first `workers`, the rest by `wait`). Returns (handles, folder):
    handles[i] is job_list[i]'s submitit job, or None while it waits for a local slot."""
    profile = job_list[0].profile
    folder = log_folder(settings, profile, desc)
    folder.mkdir(parents=True, exist_ok=True)
    context = context_for(settings, profile)
    for j in job_list:  # the rerun command's input: the same pickle a worker receives
        _spec_path(folder, j).write_bytes(pickle.dumps((j, context)))
    executor = make_executor(settings, folder, len(job_list))
    if settings.kind == "slurm":
        return executor.map_array(worker, job_list, [context] * len(job_list)), folder
    handles = [None] * len(job_list)
    for i in range(min(settings.workers, len(job_list))):
        handles[i] = _submit_local(executor, handles, worker, job_list[i], context)
    return handles, folder


def _submit_local(executor, handles: list, worker, job: jobs.Job, context: WorkerContext):
    """Start the job as a subprocess; on a machine with GPUs it sees one, the one fewest running jobs use (submitit's
    local executor hides every GPU from a job that asks for none)."""
    n_gpus = torch.cuda.device_count()
    if n_gpus:
        using = [h.rlcp_gpu for h in handles if h is not None and not h.done()]
        gpu = min(range(n_gpus), key=using.count)
        executor.update_parameters(gpus_per_node=1, visible_gpus=[gpu])
    handle = executor.submit(worker, job, context)
    handle.rlcp_gpu = gpu if n_gpus else None
    return handle


def wait(job_list: list[jobs.Job], handles: list, settings: ExecutorSettings, folder: Path, desc: str,
         worker=train_job) -> list[str]:
    """Wait for every job (starting queued local ones as slots free up), with a progress line of finished jobs;
    returns a report line per failed job (empty when all succeeded)."""
    executor = make_executor(settings, folder, len(job_list)) if None in handles else None
    context = context_for(settings, job_list[0].profile)
    bar = Progress(f"{desc}: {len(job_list)} jobs ({settings.kind})", len(job_list))
    ended: set[int] = set()
    failures = []
    while len(ended) < len(job_list):
        for i, handle in enumerate(handles):
            if handle is None or i in ended or not handle.done():
                continue
            ended.add(i)
            error = _error_of(handle)
            if error is not None:
                failures.append(_report(job_list[i], handle, error, folder))
                print(f"job {_label(job_list[i])} failed: {error}", flush=True)
            bar.update(note=f"{len(failures)} failed" if failures else "")
        running = sum(1 for i, h in enumerate(handles) if h is not None and i not in ended)
        for i, handle in enumerate(handles):
            if handle is None and running < settings.workers:
                handles[i] = _submit_local(executor, handles, worker, job_list[i], context)
                running += 1
        if len(ended) < len(job_list):
            time.sleep(POLL_S)
    bar.close(note=f"{len(failures)} failed" if failures else "")
    return failures


def _error_of(handle) -> str | None:
    """None for a job that returned; else its error in one line (an exception, a kill, a timeout)."""
    without_result = f"its process ended without a result (state {handle.state}): killed, out of memory or out of time"
    if isinstance(handle, submitit.LocalJob) and not handle.paths.result_pickle.exists():
        return without_result  # a local process writes its result before it exits: no need to wait for a slow disk
    try:
        handle.result()
        return None
    except submitit.core.utils.UncompletedJobError:
        return without_result
    except Exception as err:  # noqa: BLE001 - any failure of a job is reported, never raised here
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[-1] if text else ''}"[:300]


def _report(job: jobs.Job, handle, error: str, folder: Path) -> str:
    return (f"{_label(job)}: {error}\n    logs: {handle.paths.stdout} and {handle.paths.stderr}\n"
            f"    rerun it alone: {sys.executable} -m rlcp_utils.training.dispatch {_spec_path(folder, job)}")


def _run_elsewhere(pending: list[jobs.Job], settings: ExecutorSettings, desc: str, worker) -> None:
    handles, folder = submit(pending, settings, desc, worker)
    where = (f"{settings.workers} at a time as subprocesses" if settings.kind == "local"
             else f"as Slurm array {handles[0].job_id.split('_')[0]}")
    # relative to the outputs folder: this line lands in executed notebooks, which carry no machine paths
    shown = folder.relative_to(outputs_root()) if folder.is_relative_to(outputs_root()) else folder
    print(f"{desc}: {len(pending)} jobs sent {where}; logs in <outputs>/{shown}", flush=True)
    try:
        failures = wait(pending, handles, settings, folder, desc, worker)
    except BaseException:  # interrupted, or the scheduler failed: stop what was sent (finished jobs stay)
        for handle in handles:
            if handle is not None and not handle.done():
                handle.cancel(check=False)
        raise
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(pending)} jobs failed (the others' results are kept; rerunning the "
                         "notebook sends only the failed ones again):\n" + "\n".join(failures))


def rerun(spec: Path) -> None:
    """Run one dispatched job alone in this process, from the pickle its worker received."""
    job, context = pickle.loads(Path(spec).read_bytes())
    context.apply()
    print(f"training {_label(job)} here ({job.profile.name}, {context.precision}, {context.threads} threads)", flush=True)
    jobs.run(job)
    print(f"done: {job.folder}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rlcp_utils.training.dispatch FOLDER/NAME_seedK.job.pkl  (reruns one dispatched job here)")
    rerun(Path(sys.argv[1]))
