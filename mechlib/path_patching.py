"""Path patching (Wang et al. 2022): the effect of a sender head on the metric through chosen receivers
only, by freezing every other head at its clean value. One sender per batch row, chunked as patching's
sweeps are; the components (z, q, k, v) are the ones components.py names."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mechlib.components import COMPONENTS, run_cache
from mechlib.loading import is_nnsight
from mechlib.patching import Metric, per_site, site_chunks
from mechlib.prompts import same_shape, to_tokens


def path_patch(model, clean: torch.Tensor | str | Sequence[str], corrupted: torch.Tensor | str | Sequence[str],
               metric: Metric, receivers: Sequence[tuple[int, int]] | str = "logits", receiver_input: str = "q",
               max_rows: int = 256, progress: bool = False) -> torch.Tensor:
    """Path patching (Wang et al. 2022): for every sender head, the effect of its corrupted output on the
    metric through the receivers only.

    receivers: "logits" (the direct path, through MLPs, to the output) or heads [(layer, head), ...], whose
    `receiver_input` ("q", "k" or "v") is what the sender may change. Each sender is one batch row:
    1. run clean with the sender's z from the corrupted run and every other head's z frozen at its clean
       value (MLPs recomputed), and record the receivers' inputs (or, for "logits", the metric);
    2. run clean again with only the receivers' inputs replaced by those records, and measure the metric.
    Returns [layer, head]; senders at or after the last receiver's layer are NaN (they can't reach it).
    This is noising: values near the clean run's metric mean the path doesn't matter.
    """
    if is_nnsight(model):
        raise ValueError("path_patch takes a TransformerLens model (load_model(...)); lesson 05 shows the same "
                         "freezing in an nnsight trace")
    clean, corrupted = to_tokens(model, clean), to_tokens(model, corrupted)
    same_shape(clean, corrupted, model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if receivers == "logits":
        last = n_layers
    else:
        receivers = [tuple(r) for r in receivers]
        if not receivers or any(not (0 <= l < n_layers and 0 <= h < n_heads) for l, h in receivers):
            raise ValueError(f"receivers must be 'logits' or heads (layer, head) within {n_layers} x {n_heads}, "
                             f"got {receivers}")
        if receiver_input not in ("q", "k", "v"):
            raise ValueError(f"receiver_input must be 'q', 'k' or 'v', not {receiver_input!r}")
        last = max(l for l, _ in receivers)
    z_names = [COMPONENTS["head_out"].hook.format(layer=l) for l in range(n_layers)]
    _, clean_cache = run_cache(model, clean, names=z_names)
    _, corrupted_cache = run_cache(model, corrupted, names=z_names)
    senders = [(l, h) for l in range(n_layers) for h in range(n_heads) if l < last]
    n_prompts = clean.shape[0]
    out = torch.full((n_layers, n_heads), float("nan"))
    for chunk in site_chunks(senders, n_prompts, max_rows, "path patching" if progress else None):
        rows = clean.repeat(len(chunk), 1)
        freeze = []
        for layer in range(n_layers):
            is_sender = torch.zeros(len(chunk), 1, 1, n_heads, 1, dtype=torch.bool, device=clean.device)  # [sites, 1, 1, head, 1]
            for i, (l, h) in enumerate(chunk):
                if l == layer:
                    is_sender[i, 0, 0, h, 0] = True
            name = z_names[layer]

            def frozen(act, hook, c=clean_cache[name], x=corrupted_cache[name], m=is_sender):
                return torch.where(m.to(act.device), x[None], c[None]).view(act.shape)

            freeze.append((name, frozen))
        if receivers == "logits":
            with torch.no_grad():
                logits = model.run_with_hooks(rows, fwd_hooks=freeze)
        else:
            recorded: dict[str, torch.Tensor] = {}
            r_names = sorted({COMPONENTS[receiver_input].hook.format(layer=l) for l, _ in receivers})

            def record(name: str) -> Callable:
                def hook(act, hook):
                    recorded[name] = act.detach().clone()
                    return act

                return hook

            with torch.no_grad():
                model.run_with_hooks(rows, fwd_hooks=freeze + [(n, record(n)) for n in r_names])
            patches = []
            for name in r_names:
                layer = int(name.split(".")[1])
                heads = [h for l, h in receivers if l == layer]

                def receive(act, hook, new=recorded[name], heads=heads):  # act [rows, pos, head, d_head]
                    act = act.clone()
                    act[:, :, heads] = new[:, :, heads]
                    return act

                patches.append((name, receive))
            with torch.no_grad():
                logits = model.run_with_hooks(rows, fwd_hooks=patches)
        values = per_site(metric, logits.view(len(chunk), n_prompts, *logits.shape[1:]), chunk)
        for (l, h), value in zip(chunk, values):
            out[l, h] = value
    return out


