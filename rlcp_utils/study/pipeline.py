"""Run the study's notebooks in order with papermill on one profile.

    python -m rlcp_utils.study.pipeline --profile default        # what `make reproduce` calls

Each executed notebook is written to outputs/<profile>/notebooks/ only once it has finished (atomic
rename), and manifest.json records it: the parameter hash, the notebook's hash, the git commit, the run of
each notebook it reads, wall time and peak memory. A notebook runs again when, and only when:
- it has no finished record (never ran, failed, or was last run directly, outside the pipeline);
- its own code changed (the .ipynb's hash) or a parameter that it reads first changed (Parameter.stage);
- the package code it runs changed: every rlcp_utils file that its imports reach (core.codehash) is hashed
  into its manifest entry (`code_sha256`, `code_files`), and a run made by other code is rerun, naming the
  files that changed (training jobs and cached analyses carry the same hash in their keys, so inside the
  rerun only what that code computes is recomputed);
- a notebook it reads (the `Reads:` line of its first markdown cell) runs in this invocation, or ran since.
So an interrupted run resumes after the last notebook that finished, and a change to one notebook reruns
only the notebooks that read its results.

    python -m rlcp_utils.study.pipeline --check             # what `make check` calls: which committed outputs
                                                              are stale against this checkout, and why

--rerun runs every selected notebook again at this checkout unless it already ran at this (clean) commit and is
current, reusing each training job and cached analysis whose key is current: how a study made over several commits is
brought to one commit without retraining what the same code already trained (a job's key holds the hash of the code
it runs), and an interrupted rerun resumes. Weights are not committed: an analysis that loads a model this machine
lacks retrains it first (the first training seed's). With --only, the notebooks that read a rerun one are left
stale ("... ran since") for the next run.
--force reruns every selected notebook and recomputes everything inside it: training jobs are retrained and
cached generations regenerated (the kernels see RLCP_FORCE=1), nothing is reused.

A profile of PROFILE_NOTEBOOKS runs only its notebooks (a control that answers one question): the pipeline runs those
when it is given no --only, and `--check` judges only those.
A failing notebook stops the run and names the failing cell.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from papermill.exceptions import PapermillExecutionError

from rlcp_utils.core import codehash
from rlcp_utils.core.config import (
    REPO_ROOT,
    ParameterError,
    load_profile,
    notebook_stage,
)
from rlcp_utils.core.executor import EXECUTOR_ENV, KINDS as EXECUTOR_KINDS, executor_settings
from rlcp_utils.core.model import resolve_precision
from rlcp_utils.core.notebook import FORCE_ENV, NOTEBOOK_DIR, PEAK_RSS_ENV, PIPELINE_ENV, reads
from rlcp_utils.core.files import atomic_write_text
from rlcp_utils.core.outputs import (
    git_commit,
    read_json,
    run_times_table,
    readable,
    record_notebook_run,
    README_TABLES,
    update_readme_table,
    write_json,
)
from rlcp_utils.study import prose


# The profiles that run only some of the notebooks, by name. fp32-check is the control for the default profile's
# precision: it retrains RLCP in fp32 (01 makes its data, 03 trains) and compares it with default (bench --precision).
PROFILE_NOTEBOOKS: dict[str, tuple[str, ...]] = {"fp32-check": ("01_data", "03_rlcp_training")}


def study_notebooks(profile=None) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb), in order; with a profile, those it runs (PROFILE_NOTEBOOKS, by the
    profile's name, with or without the suffix of a command-line override)."""
    every = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    only = PROFILE_NOTEBOOKS.get(profile.name.split("+")[0]) if profile is not None else None
    return every if only is None else [nb for nb in every if nb.stem in only]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def notebook_code(notebook: Path) -> dict[str, str]:
    """{package file: hash} of the rlcp_utils code a notebook runs: the closure of its code cells' imports."""
    source = "\n".join(codehash.code_cells(notebook))
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return codehash.file_hashes(sorted(codehash.imported_modules(source)))


def _manifest(profile) -> dict:
    return read_json(profile.output_dir / "manifest.json", {}) or {}


def why_stale(profile, notebook: Path, manifest: dict) -> str | None:
    """Why this notebook's recorded run is not current (None when it is), not counting notebooks that run now."""
    entry = manifest.get("notebooks", {}).get(notebook.stem)
    if not entry:
        return "never ran"
    if entry.get("status") != "ok":
        return {"direct": "last run outside the pipeline", "failed": "failed last time"}.get(entry.get("status"), "not finished")
    if not (profile.output_dir / "notebooks" / notebook.name).exists():
        return "its executed notebook is missing"
    if entry.get("notebook_sha256") != _sha256(notebook):
        return "the notebook changed"
    if entry.get("param_hash") != profile.hash_of_stage(notebook_stage(notebook.stem)):
        return "its parameters changed"
    code = notebook_code(notebook)
    if entry.get("code_sha256") != codehash.digest(code):
        if not entry.get("code_files"):
            return "made by code that recorded no hash of itself (before code hashes)"
        changed = codehash.changed_files(entry["code_files"], code)
        return f"the package code it runs changed ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})"
    for dep in reads(notebook):
        dep_entry = manifest.get("notebooks", {}).get(dep, {})
        if entry.get("reads", {}).get(dep) != dep_entry.get("finished_utc"):
            return f"{dep} ran since"
    return None


def plan(profile, notebooks: list[Path], force: bool = False, rerun: bool = False) -> dict[str, str | None]:
    """For each notebook, why it runs now (None: it is current and is skipped)."""
    manifest = _manifest(profile)
    out: dict[str, str | None] = {}
    commit = git_commit() if rerun else None
    for nb in notebooks:
        if force:
            out[nb.stem] = "--force"
            continue
        reason = why_stale(profile, nb, manifest)
        made_at = manifest["notebooks"][nb.stem].get("git_commit") if reason is None else None
        if rerun and reason is None and (made_at != commit or not commit or commit.endswith("+dirty")):
            reason = "--rerun"  # current, but made at another commit, or this tree is dirty
        rerun_deps = [d for d in reads(nb) if out.get(d)]
        out[nb.stem] = reason or (f"{rerun_deps[0]} runs now" if rerun_deps else None)
    return out


def forget_removed_notebooks(profile) -> list[str]:
    """Drop the manifest entries, executed copies and results files of notebooks that no longer exist (renamed
    or removed), so the manifest and the results record describe only what the current notebooks made. Returns
    their names."""
    manifest = _manifest(profile)
    current = {nb.stem for nb in study_notebooks()}
    gone = sorted(set(manifest.get("notebooks", {})) - current)
    for name in gone:
        del manifest["notebooks"][name]
        (profile.output_dir / "notebooks" / f"{name}.ipynb").unlink(missing_ok=True)
        (profile.output_dir / "results" / f"{name}.csv").unlink(missing_ok=True)
    if gone:
        write_json(profile.output_dir / "manifest.json", manifest)
    return gone


def is_done(profile, notebook: Path) -> bool:
    return why_stale(profile, notebook, _manifest(profile)) is None


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


def run_notebook(profile, notebook: Path, log_output: bool = False, force: bool = False) -> float:
    out_dir = profile.sub("notebooks")
    final = out_dir / notebook.name
    partial = out_dir / f"{notebook.stem}.running.ipynb"
    failed = out_dir / f"{notebook.stem}.failed.ipynb"
    sha = _sha256(notebook)  # before running: an edit made during the run must not pass for what ran
    code = notebook_code(notebook)  # likewise for the package code it runs
    manifest = _manifest(profile)
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
    peak_file.unlink(missing_ok=True)
    return wall


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


def recorded_precisions(profile) -> dict[str, list[str]]:
    """{precision: [what ran in it]} over the profile's outputs: every manifest entry and every finished training
    job (job.json). One profile's outputs must hold one precision: Table 1 compares arms trained in different
    notebooks, and a job's precision is part of its key (a job of the other precision is retrained, not reused)."""
    found: dict[str, list[str]] = {}
    for name, entry in _manifest(profile).get("notebooks", {}).items():
        prec = (entry.get("precision") or {}).get("precision")
        if prec:
            found.setdefault(prec, []).append(name)
    for job in sorted(profile.output_dir.glob("jobs/*/*/job.json")):
        try:
            prec = json.loads(job.read_text()).get("precision")
        except (OSError, ValueError):
            continue
        if prec:
            found.setdefault(prec, []).append(f"job {job.parent.parent.name}/{job.parent.name}")
    return found


def precision_conflict(profile, precision: str) -> str | None:
    """Why this machine must not add runs to the profile's outputs (they were made in another precision), or None."""
    other = {p: runs for p, runs in recorded_precisions(profile).items() if p != precision}
    if not other:
        return None
    shown = "; ".join(f"{p}: {len(runs)} run{'s' * (len(runs) > 1)} ({', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''})"
                      for p, runs in sorted(other.items()))
    return (f"{profile.output_dir} holds runs in another precision than this machine's {precision} ({shown}). "
            f"One profile's results are made in one precision (Table 1 compares arms of different notebooks). "
            f"Run on a machine that resolves to {' / '.join(sorted(other))} (make check shows what is left to run), "
            f"set `precision:` in a profile of your own, or recompute everything here with --force (make reproduce FORCE=1).")


def stale_outputs(profile) -> dict[str, str]:
    """{notebook: why} for every recorded or current notebook whose committed outputs are not current against
    this checkout: its code, the package code it runs, its parameters or what it read changed, it never ran,
    or it no longer exists. Empty when everything is current."""
    manifest = _manifest(profile)
    notebooks = study_notebooks(profile)
    out = {name: "no such notebook any more (renamed or removed)"
           for name in sorted(set(manifest.get("notebooks", {})) - {nb.stem for nb in study_notebooks()})}
    for name, reason in plan(profile, notebooks).items():
        if reason is not None:
            out[name] = reason
    return out


def check(profiles: list[str]) -> int:
    """Print which committed outputs are stale against this checkout; 1 when any is, else 0."""
    stale_any = False
    for name in profiles:
        profile = load_profile(name)
        stale = stale_outputs(profile)
        stale_any |= bool(stale)
        print(f"{name}: " + ("every notebook's outputs are current" if not stale else f"{len(stale)} stale"))
        held = recorded_precisions(profile)
        here = resolve_precision(profile["precision"], profile["device"])["precision"]
        counts = ", ".join(f"{p} ({len(r)} run{'s' * (len(r) > 1)})" for p, r in sorted(held.items()))
        print(f"  precision: {counts or 'none yet'}; "
              f"this machine: {here}" + ("" if set(held) <= {here} else " (the pipeline will refuse to add runs here)"))
        stale_any |= len(held) > 1
        for nb, why in stale.items():
            print(f"  {nb}: {why}")
    return 1 if stale_any else 0


def committed_profiles() -> list[str]:
    """The profiles whose outputs are committed: outputs/<name>/manifest.json tracked by git, for a profile of
    params/ (outside a git checkout: every such manifest)."""
    found = sorted(p.parent.name for p in (REPO_ROOT / "outputs").glob("*/manifest.json")
                   if (REPO_ROOT / "params" / f"{p.parent.name}.yaml").exists())
    try:
        tracked = subprocess.run(["git", "ls-files", "outputs/*/manifest.json"], cwd=REPO_ROOT, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return found
    return [name for name in found if f"outputs/{name}/manifest.json" in tracked]


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
        return check([args.profile] if "--profile" in (argv if argv is not None else sys.argv) else committed_profiles())
    try:
        profile = load_profile(args.profile)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    notebooks = study_notebooks(profile)
    if args.only:
        every = [nb.stem for nb in study_notebooks()]
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
    todo = plan(profile, notebooks, args.force, args.rerun)
    would_run = any(why is not None for why in todo.values())
    conflict = precision_conflict(profile, prec["precision"]) if would_run and (args.only or not args.force) else None
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
        wall = run_notebook(profile, nb, log_output=args.log_output, force=args.force)
        print(f"[{i}/{len(notebooks)}] {nb.stem}: finished in {wall / 60:.1f} min", flush=True)
    print(f"done in {(time.time() - total) / 60:.1f} min; results in {profile.output_dir}")
    atomic_write_text(profile.sub("tables") / "run_times.md", run_times_table(_manifest(profile)))
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
