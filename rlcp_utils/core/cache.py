"""Cached analyses: a notebook's costly measurement of trained models, saved with the key that produced it.

    outputs/<profile>/analyses/<notebook>/<name>.csv    committed: the result, one table
    outputs/<profile>/analyses/<notebook>/<name>.json   committed: its key and when it was computed

`cached_table` returns the saved table when the saved key equals the current one; otherwise it computes the
table, saves both files (atomically, the key last) and returns it. The key is what the caller says the result
depends on (parameters, the job keys of the models it measures, input hashes) plus the hash of the package code
that computes it (`code`: module names, followed through their imports by core.codehash, without the files of how a
notebook runs and records, codehash.NOT_COMPUTING_CODE, as for training jobs) and of the code cells of the notebook
that defines `compute`, so a rerun with nothing changed reads the table back, and a change to a measuring function,
in the package or in the notebook, recomputes it. `make reproduce
FORCE=1` (RLCP_FORCE=1) recomputes every analysis.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Callable

import pandas as pd

from rlcp_utils.core import codehash
from rlcp_utils.core.config import REPO_ROOT
from rlcp_utils.core.notebook import force_recompute
from rlcp_utils.core.outputs import atomic_write_text, read_json


def notebook_code_sha256(notebook: str) -> str | None:
    """The hash of a notebook's code cells (not its prose): the compute functions it defines are part of an
    analysis's code. None outside a checkout (no notebooks/ folder)."""
    path = REPO_ROOT / "notebooks" / f"{notebook}.ipynb"
    if not path.exists():
        return None
    return hashlib.sha256(json.dumps(codehash.code_cells(path)).encode()).hexdigest()[:16]


def analysis_key(key: dict, code: list[str], notebook: str | None = None) -> str:
    """The 16-hex key of an analysis: the caller's key (JSON), the package code that computes it and the code
    cells of the notebook that defines its compute function."""
    blob = json.dumps([key, codehash.computing_code_sha256(code), notebook and notebook_code_sha256(notebook)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_table(profile, notebook: str, name: str, key: dict, compute: Callable[[], pd.DataFrame],
                 code: list[str]) -> pd.DataFrame:
    """The table `compute()` returns, from the cache when its key is current (see the module docstring)."""
    folder = profile.output_dir / "analyses" / notebook
    table, meta = folder / f"{name}.csv", folder / f"{name}.json"
    current = analysis_key(key, code, notebook)
    saved = read_json(meta, {}) or {}
    if not force_recompute() and saved.get("key") == current and table.exists():
        return pd.read_csv(table, keep_default_na=False, na_values=[""])
    t0 = time.time()
    frame = compute()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table, frame.to_csv(index=False))
    atomic_write_text(meta, json.dumps({"key": current, "code_sha256": codehash.computing_code_sha256(code), "seconds": round(time.time() - t0, 1),
                                        "computed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")
    return pd.read_csv(table, keep_default_na=False, na_values=[""])
