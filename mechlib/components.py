"""Components: the places in a model that patching reads and writes, for both backends.

A component ("head_out", "resid_pre", "q", ...) names a TransformerLens hook per layer, the axes a patch
is indexed by, and, where GPT-2's modules expose it, the nnsight module input or output that holds the
same tensor. Everything that patches (patching.py, path_patching.py) reads activations through here, in
TransformerLens's layout, whichever backend the model is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mechlib.loading import is_nnsight, module_at
from mechlib.prompts import to_tokens

Hook = tuple[str, Callable]


@dataclass(frozen=True)
class Component:
    """Where a patch goes: a hook per layer, the axes a patch is indexed by, and where they sit in the activation."""

    hook: str  # format string with {layer}
    axes: tuple[str, ...]  # ("layer", "pos") / ("layer", "head") / ("layer", "pos", "head")
    dims: dict  # axis -> its dimension in the activation, counted after batch
    ndim: int  # dimensions of the activation after batch
    nnsight: tuple[str, str, str] | None = None  # (module path with {layer}, "input"/"output", layout) in GPT-2


_RESID = dict(axes=("layer", "pos"), dims={"pos": 0}, ndim=2)  # [batch, pos, d_model]
_HEAD = dict(axes=("layer", "head"), dims={"head": 1}, ndim=3)  # [batch, pos, head, d_head]
_BLOCK, _Z = "transformer.h.{layer}", "transformer.h.{layer}.attn.c_proj"  # GPT-2's modules, for nnsight
_QKV = "transformer.h.{layer}.attn.c_attn"
COMPONENTS: dict[str, Component] = {
    "resid_pre": Component("blocks.{layer}.hook_resid_pre", **_RESID, nnsight=(_BLOCK, "input", "resid")),
    "resid_mid": Component("blocks.{layer}.hook_resid_mid", **_RESID),
    "resid_post": Component("blocks.{layer}.hook_resid_post", **_RESID, nnsight=(_BLOCK, "output", "resid")),
    "attn_out": Component("blocks.{layer}.hook_attn_out", **_RESID, nnsight=(_Z, "output", "resid")),
    "mlp_out": Component("blocks.{layer}.hook_mlp_out", **_RESID, nnsight=(_BLOCK + ".mlp", "output", "resid")),
    # a head's output is z @ W_O; z is the input of the attention's output projection
    "head_out": Component("blocks.{layer}.attn.hook_z", **_HEAD, nnsight=(_Z, "input", "heads")),
    "head_out_by_pos": Component("blocks.{layer}.attn.hook_z", ("layer", "pos", "head"), {"pos": 0, "head": 1}, 3,
                                 nnsight=(_Z, "input", "heads")),
    "q": Component("blocks.{layer}.attn.hook_q", **_HEAD, nnsight=(_QKV, "output", "q")),
    "k": Component("blocks.{layer}.attn.hook_k", **_HEAD, nnsight=(_QKV, "output", "k")),
    "v": Component("blocks.{layer}.attn.hook_v", **_HEAD, nnsight=(_QKV, "output", "v")),
    "pattern": Component("blocks.{layer}.attn.hook_pattern", ("layer", "head"), {"head": 0}, 3),  # [batch, head, q, k]
}


def component(name: str, model=None) -> Component:
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}: choose one of {', '.join(COMPONENTS)}")
    comp = COMPONENTS[name]
    if model is not None and is_nnsight(model):
        if comp.nnsight is None:
            raise ValueError(f"{name!r} is not the input or output of a module of GPT-2, so nnsight can't reach it; "
                             f"use a TransformerLens model (load_model(...)) for it, or one of "
                             f"{', '.join(n for n, c in COMPONENTS.items() if c.nnsight)}")
        if not hasattr(model, "transformer") or not hasattr(model.transformer, "h"):
            raise ValueError("mechlib knows the module names of GPT-2-style models (transformer.h[L]...) in "
                             "nnsight; for another architecture, patch with nnsight directly (lesson 05)")
    return comp


# ------------------------------------------------------------------ backends
# TransformerLens runs hooks on named hook points; nnsight reads and writes module inputs and outputs
# inside a trace. Everything else (which rows get which patch, the metric) is shared.


def n_layers_heads(model) -> tuple[int, int]:
    if is_nnsight(model):
        return model.config.n_layer, model.config.n_head
    return model.cfg.n_layers, model.cfg.n_heads


def _qkv_columns(layout: str, act: torch.Tensor) -> slice:
    """Where q, k or v sits in GPT-2's fused c_attn output [batch, pos, 3 * d_model]."""
    width = act.shape[-1] // 3
    return slice("qkv".index(layout) * width, ("qkv".index(layout) + 1) * width)


def to_layout(act: torch.Tensor, layout: str, n_heads: int) -> torch.Tensor:
    """A module's tensor [batch, pos, ...] in TransformerLens's layout for the component."""
    if layout == "resid":
        return act
    if layout in ("q", "k", "v"):
        act = act[..., _qkv_columns(layout, act)]
    return act.reshape(*act.shape[:-1], n_heads, -1)  # [batch, pos, head, d_head]


def from_layout(act: torch.Tensor, new: torch.Tensor, layout: str) -> torch.Tensor:
    """The module's tensor with the component part replaced by new (in TransformerLens's layout)."""
    if layout == "resid":
        return new
    if layout == "heads":
        return new.flatten(-2)
    out = act.clone()
    out[..., _qkv_columns(layout, act)] = new.flatten(-2)
    return out


def nnsight_run(model, tokens: torch.Tensor, comp: Component, edits: dict | None = None,
                 save: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One nnsight forward pass: edits {layer: fn(activation in layout) -> new} applied to comp's sites,
    or (save=True) every layer's activation of comp saved under its TransformerLens hook name."""
    n_layers, n_heads = n_layers_heads(model)
    saved: dict[str, torch.Tensor] = {}
    layers = range(n_layers) if save else sorted(edits or {})
    tokens = to_tokens(model, tokens)  # on the model's device
    with model.trace(tokens):
        for layer in layers:  # in forward order, as nnsight requires
            path, where, layout = comp.nnsight
            module = module_at(model, path.format(layer=layer))
            act = getattr(module, where)
            if save:
                saved[comp.hook.format(layer=layer)] = to_layout(act, layout, n_heads).save()
            else:
                setattr(module, where, from_layout(act, edits[layer](to_layout(act, layout, n_heads)), layout))
        logits = model.lm_head.output.save()
    return logits, saved


def run_cache(model, tokens: torch.Tensor, hooks: Sequence[Hook] = (), names: Sequence[str] | None = None):
    """Logits and a cache of `names` (every hook if None) for one run, with optional corrupting hooks.

    TransformerLens only; component_cache does the same for one component with either backend.
    """
    if is_nnsight(model):
        raise ValueError("run_cache takes a TransformerLens model; with nnsight use component_cache(model, tokens, "
                         "component) or save the modules you need inside a trace")
    names_filter = None if names is None else (lambda n: n in set(names))
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model.run_with_cache(to_tokens(model, tokens), names_filter=names_filter)


def component_cache(model, tokens: torch.Tensor, component_name: str,
                    hooks: Sequence[Hook] = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every layer's activation of one component, keyed by TransformerLens hook name and in
    TransformerLens's layout, from a TransformerLens or an nnsight model: the two are interchangeable."""
    comp = component(component_name, model)
    if not is_nnsight(model):
        logits, cache = run_cache(model, tokens, hooks, names=[comp.hook.format(layer=l)
                                                               for l in range(n_layers_heads(model)[0])])
        return logits, {name: cache[name] for name in cache.keys()}
    if hooks:
        raise ValueError("hooks are TransformerLens hooks; an nnsight model takes its corruption inside a trace")
    with torch.no_grad():
        return nnsight_run(model, tokens, comp, save=True)
