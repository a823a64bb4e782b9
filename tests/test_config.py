import pytest

from rlcp_utils.core import config
from rlcp_utils.core.config import ParameterError, load_profile


@pytest.mark.parametrize("name", ["default", "smoke", "paper"])
def test_shipped_profiles_load_with_every_key(name):
    profile = load_profile(name)
    assert set(profile.params) == set(config.PARAMETERS)
    assert profile.name == name


def test_paper_profile_keeps_the_papers_hyperparameters():
    p = load_profile("paper")
    assert p["model"] == "Qwen/Qwen2.5-0.5B-Instruct" and p["probe_layer"] == 20
    assert (p["epochs"], p["batch_size"], p["lambda_adv"], p["lambda_kl"], p["lambda_rag"], p["unlikelihood_weight"]) == \
        (50, 4, 2.0, 5.0, 1.0, 0.5)


def test_default_probe_layer_has_the_papers_relative_depth():
    # paper: layer 20 of Qwen2.5-0.5B's 24; SmolLM2-135M has 30 layers
    assert load_profile("default")["probe_layer"] / 30 == pytest.approx(20 / 24)


def test_base_profile_values_are_inherited_and_overridden():
    smoke, default = load_profile("smoke"), load_profile("default")
    assert smoke["model"] == default["model"]
    assert smoke["n_targets"] < default["n_targets"]
    assert smoke.hash != default.hash


def write(tmp_path, text, name="custom.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_unknown_key_names_key_file_and_known_keys(tmp_path):
    path = write(tmp_path, "base: default\nlearning_rat: 0.1\n")
    with pytest.raises(ParameterError, match=r"unknown parameter 'learning_rat' in .*custom.yaml \(known: .*learning_rate"):
        load_profile(path)


def test_wrong_type_is_refused(tmp_path):
    with pytest.raises(ParameterError, match=r"'epochs' in .*custom.yaml must be int, got str"):
        load_profile(write(tmp_path, "base: default\nepochs: ten\n"))
    with pytest.raises(ParameterError, match="must be int, got bool"):
        load_profile(write(tmp_path, "base: default\nn_targets: true\n"))


def test_out_of_range_and_negative_lambda_are_refused(tmp_path):
    with pytest.raises(ParameterError, match=r"'lambda_adv' .* = -1.0 is not allowed: must be number in \[0.0, inf\]"):
        load_profile(write(tmp_path, "base: default\nlambda_adv: -1.0\n"))
    with pytest.raises(ParameterError, match="'known_threshold'"):
        load_profile(write(tmp_path, "base: default\nknown_threshold: 1.5\n"))
    with pytest.raises(ParameterError, match="one of 'auto', 'plain', 'chat'"):
        load_profile(write(tmp_path, "base: default\nprompt_format: html\n"))


def test_int_given_for_float_is_accepted_as_float(tmp_path):
    assert load_profile(write(tmp_path, "base: default\nlearning_rate: 1\n"))["learning_rate"] == 1.0


def test_batch_larger_than_data_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="'batch_size' .* = 16 is larger than the data: n_targets = 15"):
        load_profile(write(tmp_path, "base: default\nbatch_size: 16\n"))


def test_missing_profile_lists_available_ones():
    with pytest.raises(ParameterError, match=r"no profile 'nope'.*available profiles: default, fp32-check, paper, smoke"):
        load_profile("nope")


def test_incomplete_profile_without_base_names_missing_keys(tmp_path):
    with pytest.raises(ParameterError, match="does not set .*batch_size"):
        load_profile(write(tmp_path, "model: x\n"))


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ParameterError, match="not valid YAML"):
        load_profile(write(tmp_path, "epochs: [1, 2\n"))
    with pytest.raises(ParameterError, match="must hold a mapping"):
        load_profile(write(tmp_path, "- 1\n- 2\n"))


def test_self_inheritance_is_refused(tmp_path):
    path = write(tmp_path, "", "loop.yaml")
    (tmp_path / "loop.yaml").write_text(f"base: {path}\n")
    with pytest.raises(ParameterError, match="inherits from itself"):
        load_profile(path)


def test_overrides_are_validated_and_win():
    assert load_profile("default", {"epochs": 3})["epochs"] == 3
    with pytest.raises(ParameterError, match="unknown parameter 'epoch' in overrides"):
        load_profile("default", {"epoch": 3})


def test_probe_layer_beyond_depth_is_refused():
    p = load_profile("default")
    config.check_probe_layer(p, 30)
    with pytest.raises(ParameterError, match=r"'probe_layer' .* = 25 is beyond the model's depth: .* has 24 layers"):
        config.check_probe_layer(p, 24)


def test_outputs_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RLCP_OUTPUTS_DIR", str(tmp_path))
    assert load_profile("smoke").output_dir == tmp_path / "smoke"


def test_parameter_stages_decide_what_a_change_invalidates():
    default = load_profile("default")
    more_gsm8k = load_profile("default", {"gsm8k_n_problems": default["gsm8k_n_problems"] + 1})
    # a GSM8K setting (stage 7) leaves the data, training and probing results valid ...
    assert all(more_gsm8k.hash_through(s) == default.hash_through(s) for s in range(1, 7))
    # ... and invalidates 07 onwards
    assert more_gsm8k.hash_through(7) != default.hash_through(7) and more_gsm8k.hash != default.hash
    # a training setting invalidates 02 onwards, not the data notebook
    lr = load_profile("default", {"learning_rate": 1e-4})
    assert lr.hash_through(1) == default.hash_through(1) and lr.hash_through(2) != default.hash_through(2)
    assert config.notebook_stage("07_gsm8k") == 7 and config.notebook_stage("notebooks/04_probing.ipynb") == 4
    with pytest.raises(ValueError):
        config.notebook_stage("report")
