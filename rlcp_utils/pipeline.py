"""Run the study's notebooks in order with papermill on one profile.

    python -m rlcp_utils.pipeline --profile default        # what `make reproduce` calls

Each executed notebook is written to outputs/<profile>/notebooks/ only once it has finished (atomic
rename), and manifest.json records it with the parameter hash and the notebook's hash. A rerun skips the
notebooks whose recorded run matches both (the parameter hash covers only the parameters that notebook and
the earlier ones read, so changing a GSM8K setting reruns 07 onwards and nothing before it), so an interrupted run resumes after the last notebook that
finished, and once a notebook runs every later one runs too (they read what it wrote); --force reruns
everything. A failing notebook stops the run and names the failing cell.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

from .config import PARAMS_DIR, REPO_ROOT, ParameterError, load_profile, notebook_stage
from .outputs import read_json, record_notebook_run, update_readme_table

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def study_notebooks() -> list[Path]:
    """The numbered notebooks (NN_name.ipynb), in order."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoints_written_by(profile, notebook: str) -> list[str]:
    """Arms whose checkpoints a notebook trains (checkpoints are not committed: see first_to_run)."""
    arms = list(profile["arms"])
    return {"02_baselines": [a for a in arms if a != "rlcp"], "03_rlcp_training": [a for a in arms if a == "rlcp"]}.get(notebook, [])


def missing_checkpoints(profile, notebook: Path) -> list[str]:
    return [arm for arm in checkpoints_written_by(profile, notebook.stem)
            if not (profile.output_dir / "checkpoints" / arm / "checkpoint.json").exists()]


def first_to_run(profile, notebooks: list[Path], force: bool = False) -> int | None:
    """Index of the first notebook to run (it and every later one run), or None when all are done.
    A finished training notebook whose checkpoints are missing (a fresh clone: they are not committed) is
    rerun only when a later notebook has to run, since the later notebooks load the trained models."""
    if force:
        return 0 if notebooks else None
    pending = [i for i, nb in enumerate(notebooks) if not is_done(profile, nb)]
    if not pending:
        return None
    lacking = [i for i, nb in enumerate(notebooks[: pending[0]]) if missing_checkpoints(profile, nb)]
    return lacking[0] if lacking else pending[0]


def is_done(profile, notebook: Path) -> bool:
    manifest = read_json(profile.output_dir / "manifest.json", {}) or {}
    entry = manifest.get("notebooks", {}).get(notebook.stem)
    executed = profile.output_dir / "notebooks" / notebook.name
    return bool(entry) and executed.exists() and entry.get("status") == "ok" \
        and entry.get("param_hash") == profile.hash_through(notebook_stage(notebook.stem)) \
        and entry.get("notebook_sha256") == _sha256(notebook)


def _kernels_peak_rss_gib() -> float | None:
    """Largest resident memory of any finished child process (the notebook kernels) so far, in GiB; a
    notebook's kernel has exited when this is read, so each notebook's value bounds its own peak."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return round(kib / 2**20, 2)


def run_notebook(profile, notebook: Path, log_output: bool = False) -> float:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir = profile.sub("notebooks")
    final = out_dir / notebook.name
    partial = out_dir / f"{notebook.stem}.running.ipynb"
    failed = out_dir / f"{notebook.stem}.failed.ipynb"
    # a profile from params/ is passed by name, any other YAML by its path
    profile_arg = profile.name if profile.path.parent == PARAMS_DIR else str(profile.path)
    sha = _sha256(notebook)  # before running: an edit made during the run must not pass for what ran
    t0 = time.time()
    try:
        pm.execute_notebook(
            str(notebook), str(partial), parameters={"profile": profile_arg},
            kernel_name="python3", language="python", cwd=str(NOTEBOOK_DIR), progress_bar=True, log_output=log_output,
        )
    except PapermillExecutionError as err:
        wall = time.time() - t0
        os.replace(partial, failed)
        record_notebook_run(profile, notebook.stem, wall, sha, "failed")
        source = "\n".join("    " + line for line in err.source.splitlines()[:12])
        raise SystemExit(
            f"\n{notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}):\n"
            f"  {err.ename}: {err.evalue}\n  cell source:\n{source}\n"
            f"  the executed notebook with the traceback: {failed}\n"
            f"  fix the cause and rerun the same command: finished notebooks are not run again."
        ) from None
    wall = time.time() - t0
    os.replace(partial, final)
    failed.unlink(missing_ok=True)
    record_notebook_run(profile, notebook.stem, wall, sha, "ok", peak_rss_gib=_kernels_peak_rss_gib())
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="name under params/ or a path to a YAML file")
    ap.add_argument("--force", action="store_true", help="rerun notebooks that already finished")
    ap.add_argument("--only", nargs="*", default=None, help="run only these notebooks (for example 01_data)")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' cell output")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
    except ParameterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    notebooks = study_notebooks()
    if args.only:
        unknown = set(args.only) - {nb.stem for nb in notebooks}
        if unknown:
            print(f"error: unknown notebook(s) {sorted(unknown)}; known: {[nb.stem for nb in notebooks]}", file=sys.stderr)
            return 2
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    print(f"profile {profile.name} ({profile.hash}): {profile['description']}")
    print(f"results go to {profile.output_dir}")
    total = time.time()
    # Each notebook reads what the earlier ones wrote: once one runs, every later one runs too.
    start = first_to_run(profile, notebooks, args.force)
    for i, nb in enumerate(notebooks, 1):
        if start is None or i - 1 < start:
            print(f"[{i}/{len(notebooks)}] {nb.stem}: already done with these parameters, skipped")
            continue
        if i - 1 == start and is_done(profile, nb) and not args.force:
            print(f"[{i}/{len(notebooks)}] {nb.stem}: done, but its checkpoints {missing_checkpoints(profile, nb)} are not here "
                  f"and later notebooks load them: running it again")
        print(f"[{i}/{len(notebooks)}] {nb.stem}: running")
        wall = run_notebook(profile, nb, log_output=args.log_output)
        print(f"[{i}/{len(notebooks)}] {nb.stem}: finished in {wall / 60:.1f} min")
    print(f"done in {(time.time() - total) / 60:.1f} min; results in {profile.output_dir}")
    if profile.name == "default" and profile.output_dir == REPO_ROOT / "outputs" / "default":
        for block, name in [("table1", "table1.md"), ("claims", "08_claims.md")]:
            table = profile.output_dir / "tables" / name
            if table.exists() and update_readme_table(REPO_ROOT / "README.md", table.read_text(), block):
                print(f"README.md: {block} block updated from", table.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
