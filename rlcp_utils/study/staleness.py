"""Which committed outputs are current against this checkout, and why not: what `make check` reports and what
the pipeline (study/pipeline.py) runs again.

    python -m rlcp_utils.study.pipeline --check             # what `make check` calls: which committed outputs
                                                              are stale against this checkout, and why

A notebook's recorded run (outputs/<profile>/manifest.json) is current when, and only when, it finished inside the
pipeline, its executed copy exists, and none of these changed since: its own code (the .ipynb's hash), a parameter that
it reads first (Parameter.stage), the package code it runs (every rlcp_utils file that its imports reach,
core.codehash), the run of a notebook it reads (the `Reads:` line of its first markdown cell). A profile's outputs
also hold one precision (every manifest entry and job.json records it).

A profile of PROFILE_NOTEBOOKS runs only its notebooks (a control that answers one question): the pipeline runs those
when it is given no --only, and `--check` judges only those.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from rlcp_utils.core import codehash
from rlcp_utils.core.config import REPO_ROOT, load_profile, notebook_stage
from rlcp_utils.core.model import resolve_precision
from rlcp_utils.core.notebook import NOTEBOOK_DIR, reads
from rlcp_utils.core.outputs import git_commit, read_json


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
