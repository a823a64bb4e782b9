"""Where training jobs run: the settings (training/dispatch.py runs the jobs). Chosen by RLCP_EXECUTOR:

    inline (or unset)   each job in turn in the notebook's own process: the default, nothing to install or start
    local               params/executors/local.yaml: up to `workers` jobs at once, each a subprocess of this machine
    slurm               params/executors/slurm.yaml: one Slurm job array per notebook
    a path              a YAML file of your own with the fields of ExecutorSettings (`kind`: one of the three)

The pipeline's --executor and `make reproduce EXECUTOR=...` set it for every notebook. Where a job runs never
enters its key: a job trained inline and one trained on a cluster are the same job. docs/cluster.md explains
every field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml

from rlcp_utils.core.config import PARAMS_DIR

EXECUTOR_ENV = "RLCP_EXECUTOR"
EXECUTORS_DIR = PARAMS_DIR / "executors"
KINDS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class ExecutorSettings:
    """Where training jobs run (see the module's docstring); the YAML files of params/executors/ set these fields."""
    kind: str = "inline"                   # inline | local | slurm
    workers: int = 2                       # local: jobs running at once (on a machine with GPUs, each job gets one,
    #                                        the least used: CUDA_VISIBLE_DEVICES)
    threads_per_job: int | None = None     # torch threads in each job; default local: this machine's cores / workers,
    #                                        slurm: cpus_per_job
    timeout_min: int = 120                 # a job still running after this is stopped and reported (local and slurm)
    log_dir: str | None = None             # default outputs/<profile>/executor_logs/<notebook>/<dispatch> (not committed)
    # slurm only (sbatch's options; see docs/cluster.md)
    partition: str | None = None           # --partition
    account: str | None = None             # --account
    qos: str | None = None                 # --qos
    constraint: str | None = None          # --constraint, for example a GPU type
    gpus_per_job: int = 0                  # --gpus-per-node (one node per job)
    cpus_per_job: int = 4                  # --cpus-per-task
    mem_gb: int = 16                       # --mem
    array_parallelism: int = 32            # at most this many tasks of one array run at once (--array=0-N%P)
    setup: list[str] = field(default_factory=list)        # shell lines run before each job (module load, source venv)
    additional: dict = field(default_factory=dict)        # any other sbatch option, e.g. {reservation: x}

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"executor kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.workers < 1 or self.timeout_min <= 0 or self.array_parallelism < 1 or self.cpus_per_job < 1:
            raise ValueError(f"executor settings out of range: {self}")

    def threads(self) -> int:
        if self.threads_per_job is not None:
            return self.threads_per_job
        if self.kind == "slurm":
            return self.cpus_per_job
        if self.kind == "local":
            return max(1, len(os.sched_getaffinity(0)) // self.workers)  # the cores this process may use (cgroups, Slurm)
        return torch.get_num_threads()


def executor_settings(value: str | None = None) -> ExecutorSettings:
    """The settings that RLCP_EXECUTOR (or `value`) names: inline, local, slurm or a YAML file's path."""
    value = os.environ.get(EXECUTOR_ENV, "") if value is None else value
    if value in ("", "inline"):
        return ExecutorSettings()
    path = EXECUTORS_DIR / f"{value}.yaml" if value in KINDS else Path(value).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{EXECUTOR_ENV}={value!r}: no such executor; use inline, local, slurm or the path of "
                                f"a YAML file with the fields of ExecutorSettings (see {EXECUTORS_DIR.name}/ and docs/cluster.md)")
    values = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in fields(ExecutorSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown executor settings {unknown}; known: {sorted(known)}")
    return ExecutorSettings(**values)
