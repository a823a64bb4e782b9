"""The cache knows its code: job keys, cached analyses and the pipeline's staleness follow the package source that a
result's computation reaches, and nothing else."""

import json
import shutil
from types import SimpleNamespace

import nbformat
import pytest

from rlcp_utils.core import codehash
from rlcp_utils.core.config import load_profile
from rlcp_utils.study import staleness
from rlcp_utils.training import jobs

FACTS = [{"city": "Berlin", "country": "Germany", "label": 0}, {"city": "Lima", "country": "Peru", "label": 1}]
STUDY = SimpleNamespace(targets=FACTS, retain=FACTS, questions=[], evidences=[], prompt_format="chat", draw=0)


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of rlcp_utils that the hashes read instead of the real one (edits stay in the copy)."""
    copy = tmp_path / "rlcp_utils"
    shutil.copytree(codehash.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "resources"))
    monkeypatch.setattr(codehash, "PACKAGE_DIR", copy)
    return copy


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_jobs_code_is_its_imports_and_not_the_study_layer():
    files = {str(p.relative_to(codehash.PACKAGE_DIR)) for p in codehash.closure_files(jobs.JOB_CODE)}
    for needed in ["training/jobs.py", "training/loop.py", "methods/rlcp.py", "methods/registry.py", "methods/common.py",
                   "data/inputs.py", "measures/evaluate.py", "core/batching.py", "__init__.py"]:
        assert needed in files, needed
    assert not {"study/claims.py", "study/pipeline.py", "study/bench.py", "measures/gsm8k.py"} & files


def test_imports_are_read_from_source_as_python_reads_them():
    src = "from rlcp_utils.core import config, model as m\nimport rlcp_utils.methods.rlcp\nfrom rlcp_utils.data.facts import split_templates\n"
    assert codehash.imported_modules(src) == {"rlcp_utils.core.config", "rlcp_utils.core.model",
                                              "rlcp_utils.methods.rlcp", "rlcp_utils.data.facts"}
    assert codehash.imported_modules("import numpy\nfrom pathlib import Path\n") == set()


def test_a_change_to_a_function_a_job_uses_changes_its_key(package_copy):
    p = load_profile("smoke", {"precision": "fp32"})
    before = jobs.job_key(p, "rlcp", 0, STUDY)
    assert jobs.job_key(p, "rlcp", 0, STUDY) == before  # stable while nothing changes
    _edit(package_copy / "study" / "claims.py", "\n", "\n# a change to the report's rules\n")
    assert jobs.job_key(p, "rlcp", 0, STUDY) == before  # code the job does not run leaves its key alone
    _edit(package_copy / "methods" / "rlcp.py", "2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0",
          "2.0 / (1.0 + math.exp(-5.0 * progress)) - 1.0")
    changed = jobs.job_key(p, "rlcp", 0, STUDY)
    assert changed != before
    _edit(package_copy / "measures" / "evaluate.py", "\n", "\n# scoring changed\n")
    assert jobs.job_key(p, "rlcp", 0, STUDY) != changed  # scoring is part of a job too


def test_the_pipeline_reruns_a_notebook_whose_package_code_changed(package_copy, tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setattr(staleness, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 01_x"), nbformat.v4.new_code_cell("from rlcp_utils.methods import rlcp")]
    path = notebooks / "01_x.ipynb"
    nbformat.write(nb, path)
    profile = load_profile("smoke")
    (profile.output_dir / "notebooks").mkdir(parents=True)
    (profile.output_dir / "notebooks" / "01_x.ipynb").write_text("{}")
    entry = {"status": "ok", "notebook_sha256": staleness._sha256(path), "param_hash": profile.hash_of_stage(1),
             "code_files": staleness.notebook_code(path), "reads": {}}
    entry["code_sha256"] = codehash.digest(entry["code_files"])
    manifest = {"notebooks": {"01_x": entry}}
    assert staleness.why_stale(profile, path, manifest) is None
    _edit(package_copy / "study" / "bench.py", "\n", "\n# unrelated\n")
    assert staleness.why_stale(profile, path, manifest) is None
    _edit(package_copy / "methods" / "common.py", "\n", "\n# changed\n")
    assert staleness.why_stale(profile, path, manifest) == "the package code it runs changed (methods/common.py)"
    del entry["code_files"], entry["code_sha256"]  # a run recorded before code hashes existed
    assert "recorded no hash" in staleness.why_stale(profile, path, manifest)
    (profile.output_dir / "manifest.json").write_text(json.dumps(manifest))
    assert staleness.stale_outputs(profile) == {"01_x": staleness.why_stale(profile, path, manifest)}


def test_a_cached_analysis_is_read_back_and_recomputed_when_its_code_changes(package_copy, tmp_path, monkeypatch):
    import pandas as pd

    from rlcp_utils.core import cache

    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    profile = load_profile("smoke")
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"arm": ["rlcp", "original"], "value": [0.25, 0.5]})

    args = (profile, "10_x", "fluency", {"n": 3}, compute, ["rlcp_utils.measures.unlearning"])
    first = cache.cached_table(*args)
    again = cache.cached_table(*args)
    assert len(calls) == 1 and again.equals(first) and list(first.value) == [0.25, 0.5]
    cache.cached_table(profile, "10_x", "fluency", {"n": 4}, compute, ["rlcp_utils.measures.unlearning"])
    assert len(calls) == 2  # another key
    assert "core/progress.py" in codehash.file_hashes(["rlcp_utils.measures.unlearning"])  # imported, yet:
    _edit(package_copy / "core" / "progress.py", "\n", "\n# how progress lines look changed\n")
    cache.cached_table(profile, "10_x", "fluency", {"n": 4}, compute, ["rlcp_utils.measures.unlearning"])
    assert len(calls) == 2  # not the code that computes it: read back
    _edit(package_copy / "measures" / "unlearning.py", "\n", "\n# changed\n")
    cache.cached_table(profile, "10_x", "fluency", {"n": 4}, compute, ["rlcp_utils.measures.unlearning"])
    assert len(calls) == 3  # the measuring code changed
    monkeypatch.setenv("RLCP_FORCE", "1")
    cache.cached_table(profile, "10_x", "fluency", {"n": 4}, compute, ["rlcp_utils.measures.unlearning"])
    assert len(calls) == 4


def test_jobs_and_cached_analyses_leave_out_the_same_infrastructure_files():
    assert jobs.NOT_JOB_CODE == codehash.NOT_COMPUTING_CODE
    every = {str(p.relative_to(codehash.PACKAGE_DIR)) for p in codehash.PACKAGE_DIR.rglob("*.py")}
    assert codehash.NOT_COMPUTING_CODE <= every  # a renamed file would silently count again


def test_the_package_imports_itself_by_absolute_names_and_unknown_modules_are_refused():
    """Relative imports would escape the import reader (it follows absolute names), so there are none."""
    import ast

    for path in codehash.PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0], path
    with pytest.raises(ValueError, match="not a module"):
        codehash.file_hashes(["rlcp_utils.methods.no_such_method"])


def test_a_jobs_key_ignores_parameter_help_but_follows_its_evaluation_inputs(package_copy):
    p = load_profile("smoke", {"precision": "fp32"})
    before = jobs.job_key(p, "rlcp", 0, STUDY)
    _edit(package_copy / "core" / "config.py", "\n", "\n# a parameter's help text, reworded\n")
    assert jobs.job_key(p, "rlcp", 0, STUDY) == before  # parameters enter the key by value, not by code
    other = SimpleNamespace(**{**vars(STUDY), "retain": FACTS[:1]})
    assert jobs.job_key(p, "rlcp", 0, other) != before  # scored on other retain facts: another job


def test_the_package_is_a_tree_of_layers_without_cycles_or_function_level_imports():
    """core < data < measures < methods < training < study: each folder imports only from itself and the ones
    before it, so the import graph has no cycle; imports sit at the top of each module."""
    import ast

    order = ["core", "data", "measures", "methods", "training", "study"]
    for path in codehash.PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(codehash.PACKAGE_DIR)
        if len(rel.parts) < 2 or rel.parts[0] not in order:
            continue
        layer = order.index(rel.parts[0])
        for module in codehash.imported_modules(path.read_text()):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in order:
                assert order.index(parts[1]) <= layer, f"{rel} imports {module} from a later layer"
        tree = ast.parse(path.read_text())
        nested = [n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not nested, f"{rel}: import inside a function (line {nested[0].lineno})"
    graph = {}
    for path in codehash.PACKAGE_DIR.rglob("*.py"):
        name = ".".join(("rlcp_utils",) + path.relative_to(codehash.PACKAGE_DIR).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = codehash.imported_modules(path.read_text()) - {name}
    done, active = set(), []

    def visit(node):
        assert node not in active, f"import cycle: {' -> '.join(active[active.index(node):] + [node])}"
        if node in done:
            return
        active.append(node)
        for nxt in graph.get(node, ()):
            visit(nxt)
        active.pop()
        done.add(node)

    for node in graph:
        visit(node)
