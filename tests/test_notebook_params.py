"""How parameters reach a notebook: papermill -p, -f with a profile file, typos, and where results go."""

import hashlib

import pytest

from rlcp_utils.core import config, notebook
from rlcp_utils.core.config import PARAMS_DIR, ParameterError, load_profile


def test_a_misspelt_parameter_stops_with_the_known_names():
    with pytest.raises(ParameterError, match=r"unknown notebook parameter\(s\) 'profle'.*'profile'.*epochs"):
        notebook.profile_from_parameters({"profile": "default", "profle": "smoke"})


def test_a_profile_file_passed_with_f_is_that_profile():
    import yaml

    injected = {"profile": "default", **yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text())}
    p = notebook.profile_from_parameters(injected)
    assert p.name == "smoke" and p.params == load_profile("smoke").params and p.committed


def test_overrides_get_a_folder_of_their_own():
    p = notebook.profile_from_parameters({"profile": "smoke", "epochs": 2})
    assert p.name.startswith("smoke+") and p["epochs"] == 2 and not p.committed
    assert p.name == notebook.profile_from_parameters({"profile": "smoke", "epochs": 2}).name  # stable
    assert notebook.profile_from_parameters({"profile": "smoke"}).name == "smoke"


def test_injected_names_are_taken_once_per_kernel():
    ns = {"profile": "smoke", "In": [], "sys": config}
    assert notebook.injected_parameters(ns) == {"profile": "smoke"}
    ns["later_variable"] = 3  # defined by a later cell: rerunning the first cell must not see it
    assert notebook.injected_parameters(ns) == {"profile": "smoke"}


def test_a_profile_outside_params_never_writes_to_a_committed_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path / "outputs"))
    mine = tmp_path / "myprof" / "default.yaml"
    mine.parent.mkdir()
    mine.write_text((PARAMS_DIR / "smoke.yaml").read_text())
    p = load_profile(str(mine))
    assert p.name == f"default-{hashlib.sha256(str(mine.resolve()).encode()).hexdigest()[:8]}"
    assert p.output_dir != tmp_path / "outputs" / "default" and not p.committed
    assert load_profile("default").committed
