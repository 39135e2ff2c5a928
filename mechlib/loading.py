"""Load a model by name: the course model (offline, the default) or any hub model such as "gpt2".

    model = load_model()                          # course model as a TransformerLens TransformerBridge
    model = load_model("course", backend="nnsight")  # the same weights as an nnsight TransformersModel
    model = load_model("course-bpe")              # the second course model: GPT-2's tokenizer, 4 x 8 heads
    model = load_model("gpt2")                    # GPT-2 small, when the hub can be reached

Every lesson loads its model through this one call, so a lesson moves to GPT-2 by changing its
MODEL_NAME setting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
# The models that ship with the course (data/), by name. MECHLIB_COURSE_MODEL points "course" elsewhere.
MODEL_DIRS = {"course": Path(os.environ.get("MECHLIB_COURSE_MODEL", REPO_ROOT / "data" / "course-model")),
              "course-bpe": REPO_ROOT / "data" / "course-bpe"}
COURSE_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
Backend = Literal["transformer_lens", "nnsight", "transformers"]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


def cache_dir(kind: str) -> Path:
    """Where mechlib keeps what it makes on first use for a model that ships none (SAEs, transcoders, fine-tunes,
    token streams): ~/.cache/mechlib/<kind>, or $MECHLIB_CACHE/<kind> (on Colab, a Drive folder survives the runtime)."""
    return Path(os.environ.get("MECHLIB_CACHE", Path.home() / ".cache" / "mechlib")) / kind


def best_device() -> str:
    """cuda, then mps, then cpu (cuda under fake CUDA, which makes torch.cuda.is_available() say so)."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def is_shipped(name: str) -> bool:
    """Is the course model `name` in data/ (course-bpe may not be trained yet)?"""
    return (MODEL_DIRS[name] / "model.safetensors").is_file()


def _check_course_model(name: str, path: Path) -> None:
    missing = [f for f in COURSE_MODEL_FILES if not (path / f).is_file()]
    if not path.is_dir() or missing:
        what = f"{path} does not exist" if not path.is_dir() else f"{path} lacks {', '.join(missing)}"
        raise ModelLoadError(f"The course model {name!r} is missing or incomplete: {what}. {_restore_hint(name)}")


def _restore_hint(name: str) -> str:
    """What to do about a missing or damaged course model."""
    path = MODEL_DIRS[name]
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    return (f"It ships with the repository: restore it with `git checkout -- {where}`, or retrain it with "
            f"`make course-model MODEL={name}` (under 30 min on 2 CPU cores)."
            + (" Set MECHLIB_COURSE_MODEL to use a copy elsewhere." if name == "course" else ""))


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Can the Hugging Face hub be reached? Answers in seconds, where transformers retries for half a minute."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"no connection to {host}: {e}"


def _is_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id, say
        return False


def resolve(name: str) -> str:
    """The local directory or hub id that `name` stands for; raises ModelLoadError if it can't be had."""
    if name in MODEL_DIRS:
        _check_course_model(name, MODEL_DIRS[name])
        return str(MODEL_DIRS[name])
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if not _is_cached(name):
        ok, why = _hub_reachable()
        if not ok:
            raise ModelLoadError(
                f"Can't load {name!r}: its weights are not on this machine and can't be downloaded "
                f"({why}). The course model works offline: use load_model('course') (MODEL_NAME = "
                f"'course'). To use {name!r}, run once on a machine with internet access (e.g. Colab), or "
                f"pass the path of a local copy saved with save_pretrained.")
    return name


def _tokenizer(path: str, name: str):
    from transformers import AutoTokenizer

    from mechlib.untrained import watch

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(f"Can't load the tokenizer of {name!r} from {path}: {e}") from e
    return watch(tokenizer, name, path)  # a course model's tokenizer warns about words it never trained on


def load_tokenizer(name: str = "course"):
    """The tokenizer of `name`, resolved as load_model resolves it (for a plain transformers model, which has none)."""
    return _tokenizer(resolve(name), name)


def load_model(name: str = "course", backend: Backend = "transformer_lens", device: str | None = None,
               compatibility_mode: bool = False, dtype: torch.dtype = torch.float32) -> Any:
    """Load `name` ("course", "course-bpe", a hub id like "gpt2", or a local HF directory) for one backend.

    backend: "transformer_lens" (a TransformerBridge), "nnsight" (a TransformersModel) or
    "transformers" (the plain HF model). device: defaults to best_device().
    compatibility_mode: TransformerLens only; folds LayerNorm and centres weights as the old
    HookedTransformer did, which makes the residual-stream decomposition exact (lesson 01).
    """
    if backend not in ("transformer_lens", "nnsight", "transformers"):
        raise ValueError(f"backend must be 'transformer_lens', 'nnsight' or 'transformers', not {backend!r}")
    if compatibility_mode and backend != "transformer_lens":
        raise ValueError("compatibility_mode is a TransformerLens setting: use backend='transformer_lens'")
    device = device or best_device()
    path = resolve(name)
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per load is noise in a lesson
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    except Exception as e:
        hint = (_restore_hint(name) if name in MODEL_DIRS
                else "Check the name, or the files in that directory.")
        raise ModelLoadError(f"Can't load {name!r} from {path}: {type(e).__name__}: {e}. {hint}") from e
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return wrap_model(hf_model, _tokenizer(path, name), name, backend, compatibility_mode)


def wrap_model(hf_model, tokenizer, name: str, backend: Backend = "transformer_lens",
               compatibility_mode: bool = False) -> Any:
    """A loaded Hugging Face model (of `name`, whose config TransformerLens reads) as `backend` sees it, on the
    model's own device: how load_model ends, and how an edited or fine-tuned copy reaches every backend."""
    from mechlib.untrained import watch

    watch(tokenizer, name, MODEL_DIRS.get(name, name))  # as load_model's: warns about untrained words
    if backend == "transformers":
        return hf_model
    param = next(iter(hf_model.parameters()))
    if backend == "nnsight":
        from nnsight import TransformersModel

        # device: else transformers' pipeline moves the model to cuda:0 whenever CUDA is available
        return TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation", device=param.device)
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(resolve(name), hf_model=hf_model, tokenizer=tokenizer,
                                                device=str(param.device), dtype=param.dtype)
    if compatibility_mode:
        model.enable_compatibility_mode(disable_warnings=True)
    watch(model.tokenizer, name, MODEL_DIRS.get(name, name))  # the bridge keeps a tokenizer of its own
    _refuse_unknown_single_tokens(model)
    return model


def _refuse_unknown_single_tokens(model) -> None:
    """Make model.to_single_token raise for a word the tokenizer doesn't know, instead of returning [UNK].

    GPT-2's byte-level tokenizer has no unknown token; the course model's word-level one does, and a
    silent [UNK] id would make a lesson compare logits of the wrong token.
    """
    unk = model.tokenizer.unk_token_id
    if unk is None:
        return
    original = model.to_single_token

    def to_single_token(string: str) -> int:
        token = original(string)
        if token == unk and string.strip() != model.tokenizer.unk_token:
            raise ValueError(
                f"{string!r} is not in this model's vocabulary (it would become {model.tokenizer.unk_token}). "
                f"The course model knows the words of its corpus only: see mechlib.corpus.vocabulary(), or "
                f"use a word from the lesson's prompts.")
        return token

    model.to_single_token = to_single_token


def is_nnsight(model) -> bool:
    """An nnsight model (or anything else without TransformerLens's hook points)."""
    return not hasattr(model, "hook_dict")


def model_device(model) -> torch.device:
    """The device of a TransformerLens, nnsight or transformers model's weights: where inputs must go."""
    return next(iter(model.parameters())).device


def module_at(model, path: str):
    """The submodule at a dotted path such as "transformer.h.2.mlp" (list indices as numbers): of an nnsight
    model (its envoy, to read .input/.output in a trace) or of any torch module."""
    mod = model
    for part in path.split("."):
        try:
            mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
        except (AttributeError, IndexError) as e:
            raise ValueError(f"the model has no module {path!r} (failed at {part!r}); print(model) lists its modules") from e
    return mod
