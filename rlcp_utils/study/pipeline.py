"""Run the study's notebooks in order with papermill on one profile.

    python -m rlcp_utils.study.pipeline --profile default        # what `make reproduce` calls
    python -m rlcp_utils.study.pipeline --check                  # what `make check` calls (study/staleness.py)

Each executed notebook is written to outputs/<profile>/notebooks/ only once it has finished (atomic rename), and
manifest.json records it: the parameter hash, the notebook's hash, the git commit, the package code it ran, the run of
each notebook it reads, wall time, peak memory, and why it ran. A notebook runs again when, and only when, its recorded
run is not current (study/staleness.py says why: it never ran, failed or ran outside the pipeline; its code, the
package code it runs or a parameter it reads changed; a notebook it reads runs now or ran since). Training jobs and
cached analyses carry the same code hash in their keys, so inside a rerun only what changed code computes is
recomputed. An interrupted run resumes after the last notebook that finished, and a change to one notebook reruns only
the notebooks that read its results.

--rerun runs every selected notebook again at this checkout unless it already ran at this (clean) commit and is
current, reusing each training job and cached analysis whose key is current: how a study made over several commits is
brought to one commit without retraining what the same code already trained (a job's key holds the hash of the code
it runs), and an interrupted rerun resumes. Weights are not committed: an analysis that loads a model this machine
lacks retrains it first (the first training seed's). With --only, the notebooks that read a rerun one are left
stale ("... ran since") for the next run. Such a run's wall time and memory are not what computing the notebook costs:
its manifest entry says it ran for --rerun, and `make cost` / `make memory` do not take it for the computing run.
--force reruns every selected notebook and recomputes everything inside it: training jobs are retrained and
cached generations regenerated (the kernels see RLCP_FORCE=1), nothing is reused.

A failing notebook stops the run and names the failing cell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from papermill.exceptions import PapermillExecutionError

from rlcp_utils.core.config import REPO_ROOT, ParameterError, load_profile
from rlcp_utils.core.executor import EXECUTOR_ENV, KINDS as EXECUTOR_KINDS, executor_settings
from rlcp_utils.core.files import atomic_write_text
from rlcp_utils.core.model import resolve_precision
from rlcp_utils.core.notebook import FORCE_ENV, NOTEBOOK_DIR, PEAK_RSS_ENV, PIPELINE_ENV, reads
from rlcp_utils.core.outputs import (
    README_TABLES,
    read_json,
    readable,
    record_notebook_run,
    run_times_table,
    update_readme_table,
    write_json,
)
from rlcp_utils.study import prose, staleness

# how the pipeline was asked to run (each manifest entry's `run_mode`): a "rerun" reused every job and cached analysis
# whose key was current, so its wall time and memory are not what computing the notebook costs (cost.py, memory.py)
RUN_MODES = ("normal", "rerun", "force")


def forget_removed_notebooks(profile) -> list[str]:
    """Drop the manifest entries, executed copies and results files of notebooks that no longer exist (renamed
    or removed), so the manifest and the results record describe only what the current notebooks made. Returns
    their names."""
    manifest = staleness._manifest(profile)
    current = {nb.stem for nb in staleness.study_notebooks()}
    gone = sorted(set(manifest.get("notebooks", {})) - current)
    for name in gone:
        del manifest["notebooks"][name]
        (profile.output_dir / "notebooks" / f"{name}.ipynb").unlink(missing_ok=True)
        (profile.output_dir / "results" / f"{name}.csv").unlink(missing_ok=True)
    if gone:
        write_json(profile.output_dir / "manifest.json", manifest)
    return gone


def _kernel_peak_rss(path: Path) -> dict:
    """The kernel's own peak resident memory and its workers', as it wrote them after its last cell
    (core.notebook.peak_rss_gib); empty when it wrote nothing (a notebook that never calls notebook.start)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def environment(**values: str):
    """These environment variables for the duration of a block (what it starts inherits them), then as they were."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_notebook(profile, notebook: Path, log_output: bool = False, force: bool = False, ran_because: str = "",
                 run_mode: str = "normal") -> float:
    out_dir = profile.sub("notebooks")
    final = out_dir / notebook.name
    partial = out_dir / f"{notebook.stem}.running.ipynb"
    failed = out_dir / f"{notebook.stem}.failed.ipynb"
    sha = staleness._sha256(notebook)  # before running: an edit made during the run must not pass for what ran
    code = staleness.notebook_code(notebook)  # likewise for the package code it runs
    manifest = staleness._manifest(profile)
    read_runs = {dep: manifest.get("notebooks", {}).get(dep, {}).get("finished_utc") for dep in reads(notebook)}
    # the kernel inherits this environment: figures inline (MPLBACKEND=Agg would drop them from the
    # executed notebook), the pipeline's mark, and the force switch
    peak_file = out_dir / f".{notebook.stem}.peak_rss.json"
    peak_file.unlink(missing_ok=True)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", PIPELINE_ENV: "1", FORCE_ENV: "1" if force else "0",
           PEAK_RSS_ENV: str(peak_file)}
    t0 = time.time()
    try:
        # the notebooks' own progress lines (stdout) go to this log as they come; papermill's cell bar is off
        with environment(**env):
            pm.execute_notebook(
                str(notebook), str(partial), parameters={"profile": profile.argument},
                kernel_name="python3", language="python", cwd=str(NOTEBOOK_DIR), progress_bar=False, log_output=log_output,
                stdout_file=None if log_output else _Prefixed(sys.stdout, f"  {notebook.stem} | "),
            )
    except PapermillExecutionError as err:
        wall = time.time() - t0
        os.replace(partial, failed)
        record_notebook_run(profile, notebook.stem, wall, sha, "failed", read_runs)
        source = "\n".join("    " + line for line in err.source.splitlines()[:12])
        raise SystemExit(
            f"\n{notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}):\n"
            f"  {err.ename}: {err.evalue}\n  cell source:\n{source}\n"
            f"  the executed notebook with the traceback: {failed}\n"
            f"  fix the cause and rerun the same command: finished notebooks are not run again."
        ) from None
    wall = time.time() - t0
    _relative_papermill_paths(partial)
    os.replace(partial, final)
    failed.unlink(missing_ok=True)
    peak = _kernel_peak_rss(peak_file)
    record_notebook_run(profile, notebook.stem, wall, sha, "ok", read_runs, peak_rss_gib=peak.get("peak_rss_gib"),
                        workers_peak_rss_gib=peak.get("workers_peak_rss_gib"), code_files=code)
    _record_why(profile, notebook.stem, ran_because, run_mode)
    peak_file.unlink(missing_ok=True)
    return wall


def _record_why(profile, notebook: str, ran_because: str, run_mode: str) -> None:
    """Add to a notebook's manifest entry why it ran and how the pipeline was asked to run. Written here, after
    core.outputs.record_notebook_run, because that module is in the code closure of the cached analyses' keys: a field
    added there would make every cached analysis recompute."""
    if run_mode not in RUN_MODES:
        raise ValueError(f"run_mode {run_mode!r} is none of {RUN_MODES}")
    path = profile.output_dir / "manifest.json"
    manifest = read_json(path, {}) or {}
    manifest["notebooks"][notebook].update({"ran_because": ran_because, "run_mode": run_mode})
    write_json(path, manifest)


def _relative_papermill_paths(path: Path) -> None:
    """papermill records the input and output paths in the notebook's metadata: keep them free of this
    machine's folders (relative to the repository, or the file name alone)."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            p = Path(meta[key])
            meta[key] = str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else p.name.replace(".running", "")
    nbformat.write(nb, path)
    readable(path)


class _Prefixed:
    """A text stream that writes each line of the kernels' stdout with a prefix, flushed at once."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.pending = stream, prefix, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.stream.write(self.prefix + line + "\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="name under params/ or a path to a YAML file")
    ap.add_argument("--force", action="store_true", help="rerun the notebooks and recompute everything (retrain)")
    ap.add_argument("--rerun", action="store_true",
                    help="rerun the selected notebooks at this checkout (those not yet run at this commit), reusing every "
                         "training job and cached analysis whose key is current")
    ap.add_argument("--only", nargs="*", default=None, help="run only these notebooks (for example 01_data)")
    ap.add_argument("--log-output", action="store_true", help="stream every cell output (not only printed lines)")
    ap.add_argument("--executor", default=None,
                    help="where training jobs run: inline (default: in each notebook's process), local (subprocesses), "
                         "slurm (a job array per notebook) or the path of an executor YAML (docs/cluster.md); "
                         f"sets {EXECUTOR_ENV} for the notebooks")
    ap.add_argument("--check", action="store_true",
                    help="run nothing: list the committed outputs that are stale against this checkout (every committed "
                         "profile unless --profile is given); exit 1 when any is")
    args = ap.parse_args(argv)
    if args.check:
        return staleness.check([args.profile] if "--profile" in (argv if argv is not None else sys.argv) else staleness.committed_profiles())
    try:
        profile = load_profile(args.profile)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    notebooks = staleness.study_notebooks(profile)
    if args.only:
        every = [nb.stem for nb in staleness.study_notebooks()]
        unknown = set(args.only) - set(every)
        if unknown:
            print(f"error: unknown notebook(s) {sorted(unknown)}; known: {every}", file=sys.stderr)
            return 2
        for name in sorted(set(args.only) - {nb.stem for nb in notebooks}):  # a notebook asked for by one that reads it
            print(f"{name}: profile {profile.name} does not run it (PROFILE_NOTEBOOKS), skipped")
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    if args.executor is not None:
        try:
            executor_settings(args.executor)  # a wrong name or file fails here, not in the first notebook
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        # the notebooks' kernels inherit it; a file's path made absolute, since kernels run inside notebooks/
        os.environ[EXECUTOR_ENV] = args.executor if args.executor in EXECUTOR_KINDS else str(Path(args.executor).resolve())
    prec = resolve_precision(profile["precision"], profile["device"])
    print(f"profile {profile.name} ({profile.hash}): {profile['description']}")
    print(f"precision {prec['precision']}: {prec['reason']}")
    # refused before anything is written, when something would run: --force without --only recomputes everything
    # in this precision (no mixing); --force --only would mix
    todo = staleness.plan(profile, notebooks, args.force, args.rerun)
    would_run = any(why is not None for why in todo.values())
    conflict = staleness.precision_conflict(profile, prec["precision"]) if would_run and (args.only or not args.force) else None
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    for name in forget_removed_notebooks(profile):
        print(f"{name}: no such notebook any more; its manifest entry and executed copy are removed")
    print(f"training jobs: {executor_settings().kind}", flush=True)
    print(f"results go to {profile.output_dir}", flush=True)
    total = time.time()
    for i, nb in enumerate(notebooks, 1):
        reason = todo[nb.stem]
        if reason is None:
            print(f"[{i}/{len(notebooks)}] {nb.stem}: already done with these parameters, skipped")
            continue
        print(f"[{i}/{len(notebooks)}] {nb.stem}: running ({reason})", flush=True)
        wall = run_notebook(profile, nb, log_output=args.log_output, force=args.force, ran_because=reason,
                            run_mode="force" if args.force else "rerun" if args.rerun else "normal")
        print(f"[{i}/{len(notebooks)}] {nb.stem}: finished in {wall / 60:.1f} min", flush=True)
    print(f"done in {(time.time() - total) / 60:.1f} min; results in {profile.output_dir}")
    atomic_write_text(profile.sub("tables") / "run_times.md", run_times_table(staleness._manifest(profile)))
    # only the committed default profile, written to the repository's own outputs/, rewrites the documentation
    if profile.committed and profile.name == "default" and profile.output_dir == REPO_ROOT / "outputs" / "default":
        for block, (name, writer, document) in README_TABLES.items():
            table = REPO_ROOT / "outputs" / name
            if writer is None:  # the bench's block is written by make bench
                continue
            if table.exists() and update_readme_table(REPO_ROOT / document, table.read_text(), block):
                print(f"{document}: {block} block updated from", table.relative_to(REPO_ROOT))
        try:  # the prose of docs/ whose numbers are placeholders of docs/templates/ (make prose)
            print("rendered from the results record:", *(p.relative_to(REPO_ROOT) for p in prose.write_documents(profile.name)))
        except KeyError as missing:
            print(f"docs/ prose not rendered: {missing.args[0]}; edit docs/templates/ and run make prose", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
