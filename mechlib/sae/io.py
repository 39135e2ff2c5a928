"""SAE files in sae-lens's on-disk format: a directory with cfg.json and sae_weights.safetensors
(W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], and threshold [d_sae] for
JumpReLU), so that `sae_lens.SAE.load_from_disk` reads what mechlib writes. mechlib's own training
settings ride along in cfg.json under "mechlib"."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mechlib.files import read_json, read_safetensors
from mechlib.loading import model_device
from mechlib.sae.base import SAE, SAEConfig

WEIGHTS, CONFIG = "sae_weights.safetensors", "cfg.json"


def save_sae(sae: SAE, path: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write sae to the directory `path` (created if needed), its weights in `dtype` (float16 halves the
    size of files the course ships; load_sae always gives float32). Returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    tensors = {name: t.cpu().to(dtype).contiguous() for name, t in sae.inference_weights().items()}
    threshold = sae.inference_threshold()
    if threshold is not None:
        tensors["threshold"] = threshold.detach().cpu().to(dtype).contiguous()
    saved = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, **({"d_out": cfg.d_out} if sae.transcoder else {}), "dtype": str(dtype).removeprefix("torch."), "device": "cpu",
             "apply_b_dec_to_input": sae.apply_b_dec_to_input and not sae.transcoder, "normalize_activations": "none",
             "reshape_activations": "none", "architecture": sae.saved_architecture,
             "metadata": dict(cfg.metadata), "mechlib": cfg.to_dict()}
    if sae.saved_architecture == "topk":
        saved.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    save_file(tensors, str(path / WEIGHTS))
    (path / CONFIG).write_text(json.dumps(saved, indent=2) + "\n")
    return path


def load_sae(path: str | Path, model=None, hook_name: str | None = None,
             device: str | torch.device | None = None) -> SAE:
    """Read an SAE directory written by save_sae or by sae-lens.

    With model (and hook_name, default the file's own), also check that the SAE fits that hook's
    activations. device: default the model's device (the CPU without a model). Refuses, with a message that says what is wrong, a missing file, a missing or
    misshapen tensor, an unknown architecture, or a d_in that does not match the hook.
    """
    from mechlib.sae import ARCHITECTURES

    path = Path(path)
    for name in (CONFIG, WEIGHTS):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} has no {name}: an SAE directory holds {CONFIG} and {WEIGHTS} "
                                    "(write one with mechlib.sae.io.save_sae)")
    raw = read_json(path / CONFIG)
    arch = raw.get("architecture", "standard")
    mine = raw.get("mechlib")
    if mine:
        cfg = SAEConfig(**mine)
    else:  # a file from sae-lens: map its inference architecture onto ours
        if arch not in ("standard", "topk", "jumprelu"):
            raise ValueError(f"{path}: architecture {arch!r} is not one mechlib implements "
                             f"(it reads 'standard', 'topk' and 'jumprelu'); load it with sae-lens instead")
        if arch == "standard" and not raw.get("apply_b_dec_to_input", True):
            arch = "april"  # sae-lens's "standard" without input centring is the April 2024 SAE
        cfg = SAEConfig(d_in=raw["d_in"], d_sae=raw["d_sae"], architecture=arch, k=raw.get("k", 16),
                        metadata=raw.get("metadata", {}))
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"{path}: normalize_activations={raw['normalize_activations']!r} is not supported; "
                         "fold the normalisation into the weights (SAE.fold_input_scale) before saving")
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {cfg.architecture!r}; mechlib has {sorted(ARCHITECTURES)}")
    sae = ARCHITECTURES[cfg.architecture](cfg)
    if (sae.saved_architecture == "topk" and raw.get("rescale_acts_by_decoder_norm")):
        raise ValueError(f"{path}: rescale_acts_by_decoder_norm=True TopK SAEs are not supported by mechlib")
    tensors = {name: t.float() for name, t in read_safetensors(path / WEIGHTS).items()}
    want = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, sae.d_out), "b_enc": (cfg.d_sae,), "b_dec": (sae.d_out,)}
    if sae.saved_architecture == "jumprelu":
        want["threshold"] = (cfg.d_sae,)
    if cfg.skip:
        want["W_skip"] = (sae.d_out, cfg.d_in)
    for name, shape in want.items():
        if name not in tensors:
            raise ValueError(f"{path / WEIGHTS} lacks {name!r} (it has {sorted(tensors)}); a {arch} SAE needs {sorted(want)}")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{path / WEIGHTS}: {name} has shape {tuple(tensors[name].shape)}, but cfg.json "
                             f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}) needs {shape}")
    with torch.no_grad():
        sae.load_weights(tensors)
        if cfg.skip:
            sae.W_skip.copy_(tensors["W_skip"])
        if "threshold" in want:
            if cfg.architecture == "batchtopk":
                sae.threshold.copy_(tensors["threshold"][0])
            else:
                sae.log_threshold.copy_(tensors["threshold"].clamp(min=1e-12).log())
    if model is not None:
        from mechlib.sae.store import hook_width

        hook_name = hook_name or cfg.metadata.get("hook_name")
        if not hook_name:
            raise ValueError(f"{path}: say which hook the SAE is for (hook_name=...): its metadata has none")
        width = hook_width(model, hook_name)
        if width != cfg.d_in:
            raise ValueError(f"{path}: the SAE takes d_in={cfg.d_in} but {hook_name!r} of this model has width "
                             f"{width}: it was trained on another hook or another model "
                             f"(metadata: {cfg.metadata})")
    if device is None:
        device = model_device(model) if model is not None else "cpu"
    return sae.to(device).eval()
