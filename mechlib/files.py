"""Reading the files the course ships or makes (SAEs, transcoders, fine-tunes, sweeps) so that a damaged one says
which file it is and how to get it back, instead of safetensors' "header too large" or a bare JSON decode error.

    tensors = read_safetensors(path)   # DamagedFileError: data/saes/L2-topk-8x/sae_weights.safetensors is damaged
    cfg = read_json(path / "cfg.json") #   (...). It ships with the course: restore it with `git checkout -- ...`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mechlib.loading import REPO_ROOT, cache_dir

# data/<folder>: the command that remakes what ships there ({model}: the model folder below it, if any)
REMAKE = {
    "saes": "`make saes`",
    "transcoders": "`make transcoders MODEL={model}`",
    "finetuned": "`python -m mechlib.finetune --model {model}`",
    "toy_models": "`make toy-models`",
    "course-model": "`make course-model MODEL=course`",
    "course-bpe": "`make course-model MODEL=course-bpe`",
}


class DamagedFileError(ValueError):
    """A file mechlib reads is truncated or malformed; the message names it and says how to restore it."""


def restore_hint(path: str | Path) -> str:
    """How to get a good copy of `path` back: git for what ships in data/, a rerun for what mechlib caches."""
    path = Path(path).resolve()
    data, cache = (REPO_ROOT / "data").resolve(), cache_dir("x").parent.resolve()
    if path.is_relative_to(data):
        parts = path.relative_to(data).parts
        model = parts[1] if len(parts) > 2 else "course"
        remake = REMAKE.get(parts[0], "").format(model=model)
        return (f"It ships with the course: restore it with `git checkout -- {path.relative_to(REPO_ROOT.resolve())}`"
                + (f", or remake it with {remake}" if remake else "") + ".")
    if path.is_relative_to(cache):
        return (f"mechlib made it on first use and keeps it in {cache}: delete {path.parent} and run again to "
                f"remake it.")
    return "Replace it with a good copy, or remake it with the command that wrote it."


def _damaged(path: Path, error: Exception) -> DamagedFileError:
    return DamagedFileError(f"{path} is damaged ({type(error).__name__}: {error}): truncated or overwritten, it can't "
                            f"be read. {restore_hint(path)}")


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; a DamagedFileError that names the file if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _damaged(path, e) from e


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in the safetensors file `path`; a DamagedFileError that names the file if it is damaged."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {restore_hint(path)}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' SafetensorError (header too large, incomplete buffer, ...) and OSError
        raise _damaged(path, e) from e


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata header of the safetensors file `path` ({} if it has none); DamagedFileError as read_safetensors."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as e:
        raise _damaged(path, e) from e
