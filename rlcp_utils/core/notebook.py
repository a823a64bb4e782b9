"""What every notebook does first: read its parameters, open the profile, set seeds, threads and precision.

    P = notebook.start("03_rlcp_training", globals())

Parameters reach a notebook in three ways, and all three end here:
- interactively (Jupyter, Colab): edit `profile` in the parameters cell;
- `papermill NB OUT -p profile smoke` (a name under params/ or a path to a YAML file), plus any profile key as
  an override (`-p epochs 2`): overrides give the run an outputs folder of its own (config.Profile);
- `papermill NB OUT -f params/smoke.yaml`: a profile file as papermill's parameters file. Its keys arrive one
  by one (`base`, `description`, `n_targets`, ...) and are put back together: the result is that profile.
A name that is neither `profile` nor a profile key (a typo such as `profle`) stops the notebook here, with the
list of known names; papermill itself would only log a warning and run the default profile.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import numpy as np
import torch
import transformers

from rlcp_utils.core import config, outputs
from rlcp_utils.core.model import resolve_precision

try:
    import resource  # POSIX only: a kernel's own peak memory
except ImportError:
    resource = None

# Names IPython puts into a kernel's namespace by itself
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# The notebook's own parameters (the parameters cell) besides the profile keys
NOTEBOOK_PARAMETERS = {"profile"}
# Set by the pipeline for the kernels it starts; a run without it is a direct run (papermill, Jupyter, Colab)
PIPELINE_ENV = "RLCP_PIPELINE_RUN"
# Set by `pipeline --force`: recompute everything, reuse no trained job or cached generation
FORCE_ENV = "RLCP_FORCE"
# Set by the pipeline for each kernel: the file where the kernel keeps its own peak resident memory (GiB)
PEAK_RSS_ENV = "RLCP_PEAK_RSS_FILE"

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
_READS = re.compile(r"^\s*#?\s*Reads:\s*(.+?)\.?\s*$", re.M)

_first_seen: dict[int, dict] = {}


def force_recompute() -> bool:
    """True in a `make reproduce FORCE=1` run: training jobs and generations are recomputed, not reused."""
    return os.environ.get(FORCE_ENV, "") == "1"


def injected_parameters(namespace: dict) -> dict:
    """The plain values a kernel held before the first call of start(): the parameters cell and whatever
    papermill injected after it. Taken once per kernel, so rerunning the cell later sees the same names."""
    key = id(namespace)
    if key not in _first_seen:
        _first_seen[key] = {k: v for k, v in namespace.items()
                            if not k.startswith("_") and k not in _IPYTHON_NAMES
                            and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    return dict(_first_seen[key])


def profile_from_parameters(values: dict) -> config.Profile:
    """The profile that a notebook's parameters describe (see the module docstring)."""
    values = dict(values)
    unknown = sorted(set(values) - NOTEBOOK_PARAMETERS - set(config.PARAMETERS) - {"base"})
    if unknown:
        raise config.ParameterError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}: this notebook takes 'profile' (a name "
            f"under params/ or a path to a YAML file) and, as overrides, any profile key: {', '.join(sorted(config.PARAMETERS))}; "
            f"a profile file can also be passed whole with papermill -f params/<name>.yaml")
    name = values.pop("profile", "default")
    base = values.pop("base", None)
    if base is not None:  # a profile file passed with -f: its keys are overrides of its base
        name = base
    return config.load_profile(str(name), values)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: every random choice in a notebook follows the profile's seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    """0 keeps torch's default (one thread per core)."""
    if n > 0:
        torch.set_num_threads(n)


def start(notebook: str, namespace: dict) -> config.Profile:
    """Open the profile from the notebook's parameters; seed, threads, figures inline; mark a direct run (and
    build the earlier notebooks' results it reads when they are missing, as in a fresh Colab runtime)."""
    P = profile_from_parameters(injected_parameters(namespace))
    _quiet_library_progress()
    shell = _ipython_shell()
    if shell is not None:
        _keep_peak_rss(shell, P, notebook)
    if shell is not None and "ipykernel" in sys.modules:  # a notebook kernel, not an IPython terminal
        # figures inline in the executed notebook (PNG), even in a kernel started with MPLBACKEND=Agg (nbval's)
        shell.run_line_magic("matplotlib", "inline")
        matplotlib.rcParams["figure.dpi"] = 80
    seed_everything(P["seed"])
    set_threads(P["torch_threads"])
    if os.environ.get(PIPELINE_ENV) != "1":
        build_missing_upstream(P, notebook)
        _record_direct_run(P, notebook)
    prec = resolve_precision(P["precision"], P["device"])
    print(f"{notebook}: profile {P.name} ({P.hash}), results in {_shown(P.output_dir)}; {P['description']}\n"
          f"precision {prec['precision']}: {prec['reason']}")
    return P


def _quiet_library_progress() -> None:
    """The study prints its own progress lines (progress.py): library bars would fill the executed notebook
    with stderr lines (tqdm.auto's warning is silenced in rlcp_utils/__init__.py)."""
    transformers.utils.logging.disable_progress_bar()


def _shown(path) -> str:
    """A path relative to the repository when inside it: executed notebooks carry no machine paths."""
    try:
        return str(path.relative_to(config.REPO_ROOT))
    except ValueError:
        return str(path.name)


def _record_direct_run(P: config.Profile, notebook: str) -> None:
    """A run outside the pipeline rewrites this notebook's results, but its executed notebook lies wherever
    the user put it: the manifest says so, and the pipeline reruns the notebook instead of vouching for it."""
    path = P.output_dir / "manifest.json"
    manifest = outputs.read_json(path, {}) or {}
    manifest.setdefault("notebooks", {})[notebook] = {
        "status": "direct", "git_commit": outputs.git_commit(),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": "run outside the pipeline (papermill, Jupyter or Colab): make reproduce reruns it"}
    outputs.write_json(path, manifest)


# --- what a notebook reads, and building it when it is missing ---------------------------------------------


def reads(notebook: Path) -> list[str]:
    """The notebooks whose results this one reads, from the 'Reads: 01_data, 02_baselines' line of its
    first markdown cell (none when there is no such line)."""
    nb = json.loads(notebook.read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            found = _READS.search("".join(cell.get("source", "")))
            return [name.strip(" `") for name in found.group(1).split(",")] if found else []
    return []


def upstream(notebook: str) -> list[str]:
    """Every notebook whose results this one needs, directly or through another, in the study's order."""
    needed: set[str] = set()
    todo = [notebook]
    while todo:
        for dep in reads(NOTEBOOK_DIR / f"{todo.pop()}.ipynb"):
            if dep not in needed:
                needed.add(dep)
                todo.append(dep)
    return sorted(needed)


def missing_upstream(P: config.Profile, notebook: str) -> list[str]:
    """The notebooks this one needs that have no finished run in this profile's outputs (never ran, failed or
    stopped). A stale run (`make check`) still counts as present: its results are there to read."""
    runs = (outputs.read_json(P.output_dir / "manifest.json", {}) or {}).get("notebooks", {})
    return [nb for nb in upstream(notebook) if runs.get(nb, {}).get("status") not in ("ok", "direct")]


def recorded_minutes(profile_name: str, notebooks: list[str]) -> dict[str, float]:
    """{notebook: minutes} of the committed run of this profile (outputs/<profile>/manifest.json in the
    repository), where it recorded one: the estimate shown before building what is missing."""
    runs = (outputs.read_json(config.REPO_ROOT / "outputs" / profile_name / "manifest.json", {}) or {}).get("notebooks", {})
    return {nb: runs[nb]["wall_s"] / 60 for nb in notebooks if runs.get(nb, {}).get("wall_s")}


def build_missing_upstream(P: config.Profile, notebook: str) -> list[str]:
    """Run, with the pipeline, the earlier notebooks whose results this one reads and that are missing (a fresh
    Colab runtime has only the committed outputs; a new profile has none). Their output streams here, with a
    line per finished notebook and the time left, estimated from the committed run of the profile."""
    missing = missing_upstream(P, notebook)
    if not missing:
        return []
    if "+" in P.name:
        raise RuntimeError(f"{notebook} reads {', '.join(missing)}, which have not run with these overridden parameters "
                           f"({P.name}): run them first with the same overrides (papermill -p ...)")
    estimate = recorded_minutes(P.name, missing)
    known = " in all" if len(estimate) == len(missing) else f" for the {len(estimate)} with a recorded run"
    print(f"{notebook} reads results that are missing here: {', '.join(missing)}. Building them now with the pipeline"
          + (f" (~{sum(estimate.values()):.0f} min{known}, from the committed run of profile {P.name})" if estimate else "")
          + ".", flush=True)
    cmd = [sys.executable, "-m", "rlcp_utils.study.pipeline", "--profile", P.argument, "--only", *missing]
    t0, done = time.monotonic(), 0
    finished = re.compile(r"^\[\d+/\d+\] (\S+): finished in")
    with subprocess.Popen(cmd, cwd=config.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONPATH": _with_repository(os.environ.get("PYTHONPATH", ""))}) as run:
        for line in run.stdout:
            if "Kernel is running over TCP" in line:  # jupyter_client's notice for local kernels: noise here
                continue
            print(line, end="", flush=True)
            if finished.match(line):
                done += 1
                left = sum(estimate.get(nb, 0.0) for nb in missing[done:])
                print(f"upstream of {notebook}: {done}/{len(missing)} built, {(time.monotonic() - t0) / 60:.1f} min elapsed"
                      + (f", ~{left:.1f} min left" if left and done < len(missing) else ""), flush=True)
    if run.returncode != 0:
        raise RuntimeError(f"building {', '.join(missing)} for {notebook} failed (the pipeline's message is above); "
                           f"fix it and rerun this cell, or run `make reproduce PROFILE={P.name}`")
    return missing


def _with_repository(pythonpath: str) -> str:
    """PYTHONPATH with this checkout first: the pipeline and its kernels import the same rlcp_utils as this one."""
    return os.pathsep.join([str(config.REPO_ROOT), *[p for p in pythonpath.split(os.pathsep) if p]])


# --- each kernel's own peak memory -------------------------------------------------------------------------


def _workers_hwm_kib() -> int:
    """The sum of every descendant process's own peak (Linux VmHWM, which starts afresh at exec, so a worker's
    figure is its own and not the memory it was forked from): children and their children (a local training
    job runs under submitit's controller). A child that has not exec'd its own program yet (its command line is still
    its parent's) is left out: between fork and exec its VmHWM is the parent's resident memory, shared copy-on-write,
    which the parent's own peak already counts (a sample in that window once added the kernel's size to its workers')."""
    parent_of, hwm, command = {}, {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:  # the command line before the status: an exec between the two reads then shows as not yet exec'd
            command[proc.name] = (proc / "cmdline").read_bytes()
            fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
        except OSError:  # a process that ended while we read
            command.pop(proc.name, None)
            continue
        parent_of[proc.name] = fields.get("PPid", "").strip()
        if "VmHWM" in fields:
            hwm[proc.name] = int(fields["VmHWM"].split()[0])
    ours, frontier = set(), {str(os.getpid())}
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier} - ours
        ours |= frontier
    return sum(hwm.get(pid, 0) for pid in ours if command.get(pid) != command.get(parent_of[pid]))


def _own_peak_gib() -> float | None:
    """This process's peak resident memory so far (getrusage RUSAGE_SELF; KiB on Linux), in GiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2) if resource else None


def peak_rss_gib() -> dict:
    """This kernel's peak resident memory so far and its worker processes' now (joblib's probe fits, local training
    jobs and their children), in GiB. The workers' figure sums each live one's own peak (Linux VmHWM): an upper
    bound of what they held at once. Workers that end inside a cell are caught by the kernel's WorkerPeak sampler."""
    return {"peak_rss_gib": _own_peak_gib(), "workers_peak_rss_gib": round(_workers_hwm_kib() / 2**20, 2)}


class WorkerPeak:
    """The largest workers' figure (peak_rss_gib) seen since it started, sampled every `every_s` seconds in a daemon
    thread: a worker that ends within a cell (a training job of the local executor) is gone by the cell's end."""

    def __init__(self, every_s: float = 2.0):
        self.largest_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True, name="rlcp-worker-peak")
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.largest_kib = max(self.largest_kib, _workers_hwm_kib())
            self._stop.wait(every_s)

    def gib(self) -> float:
        self.largest_kib = max(self.largest_kib, _workers_hwm_kib())
        return round(self.largest_kib / 2**20, 2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _ipython_shell():
    """The IPython shell this code runs in (a notebook kernel), or None in a plain Python process."""
    return sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None


def _keep_peak_rss(shell, P: config.Profile, notebook: str) -> None:
    """After every cell, record this kernel's peak memory: in the file the pipeline named (PEAK_RSS_ENV), which it
    copies into the manifest when the notebook has finished, or, in a direct run, in the manifest's entry itself.
    One value per notebook, its own (not the largest kernel the runner has seen so far)."""
    target = os.environ.get(PEAK_RSS_ENV)
    started = time.monotonic()
    workers = WorkerPeak()  # one sampler per recorder: a rerun of the first cell stops the old one (below)

    def write(*_args) -> None:
        peak = {"peak_rss_gib": _own_peak_gib(), "workers_peak_rss_gib": workers.gib()}  # one scan of /proc, not two
        if target:
            Path(target).write_text(json.dumps({"notebook": notebook, **peak}))
            return
        path = P.output_dir / "manifest.json"
        manifest = outputs.read_json(path, {}) or {}
        entry = manifest.get("notebooks", {}).get(notebook)
        if entry and entry.get("status") == "direct":
            entry.update(peak, wall_s=round(time.monotonic() - started, 1))  # from notebook.start to this cell's end
            outputs.write_json(path, manifest)

    for callback in [f for f in shell.events.callbacks["post_run_cell"] if getattr(f, "_rlcp_peak", False)]:
        shell.events.unregister("post_run_cell", callback)  # a rerun of the first cell: one recorder per kernel
        callback._rlcp_workers.stop()
    write._rlcp_peak = True
    write._rlcp_workers = workers
    shell.events.register("post_run_cell", write)
