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

import os
import random
import sys
import types
from datetime import datetime, timezone

import matplotlib
import numpy as np
import torch
import transformers

from rlcp_utils.core import config, outputs
from rlcp_utils.core.model import resolve_precision

# Names IPython puts into a kernel's namespace by itself
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# The notebook's own parameters (the parameters cell) besides the profile keys
NOTEBOOK_PARAMETERS = {"profile"}
# Set by the pipeline for the kernels it starts; a run without it is a direct run (papermill, Jupyter, Colab)
PIPELINE_ENV = "RLCP_PIPELINE_RUN"
# Set by `pipeline --force`: recompute everything, reuse no trained job or cached generation
FORCE_ENV = "RLCP_FORCE"

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
    """Open the profile from the notebook's parameters; seed, threads, figures inline; mark a direct run."""
    P = profile_from_parameters(injected_parameters(namespace))
    _quiet_library_progress()
    if "ipykernel" in sys.modules:  # figures inline in the executed notebook, even when MPLBACKEND=Agg is set
        matplotlib.use("module://matplotlib_inline.backend_inline")
        matplotlib.rcParams["figure.dpi"] = 80
    seed_everything(P["seed"])
    set_threads(P["torch_threads"])
    if os.environ.get(PIPELINE_ENV) != "1":
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
