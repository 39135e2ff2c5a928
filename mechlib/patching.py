"""Activation patching, batched: which components carry a behaviour (lesson 04).

Run the model on a clean prompt and a corrupted one, then re-run one of them with one component's
activation taken from the other run, and measure how much of the behaviour comes back (denoising:
clean into corrupted) or goes away (noising: corrupted into clean).

    metric = normalized(logit_diff(answers, wrongs), clean_logits, corrupted_logits)  # 0 corrupted, 1 clean
    heads = patch(model, clean_tokens, corrupted_tokens, metric, "head_out")  # [layer, head]

Every patch is one row of a batch: a sweep over all heads costs one or a few forward passes, not one per
head. `head_patching_loop` is the reference text's loop, kept as the reference the batched code is
checked (and benchmarked) against. Also here: the ROME Gaussian-noise corruption, attribution patching
(the gradient approximation) and path patching from sender heads to receiver heads (IOI paper).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mechlib.loading import is_nnsight, module_at

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits [batch, pos, d_vocab] -> scalar
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
            raise ValueError("mechlib.patching knows the module names of GPT-2-style models (transformer.h[L]...) in "
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


def _to_layout(act: torch.Tensor, layout: str, n_heads: int) -> torch.Tensor:
    """A module's tensor [batch, pos, ...] in TransformerLens's layout for the component."""
    if layout == "resid":
        return act
    if layout in ("q", "k", "v"):
        act = act[..., _qkv_columns(layout, act)]
    return act.reshape(*act.shape[:-1], n_heads, -1)  # [batch, pos, head, d_head]


def _from_layout(act: torch.Tensor, new: torch.Tensor, layout: str) -> torch.Tensor:
    """The module's tensor with the component part replaced by new (in TransformerLens's layout)."""
    if layout == "resid":
        return new
    if layout == "heads":
        return new.flatten(-2)
    out = act.clone()
    out[..., _qkv_columns(layout, act)] = new.flatten(-2)
    return out


def _nnsight_run(model, tokens: torch.Tensor, comp: Component, edits: dict | None = None,
                 save: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One nnsight forward pass: edits {layer: fn(activation in layout) -> new} applied to comp's sites,
    or (save=True) every layer's activation of comp saved under its TransformerLens hook name."""
    n_layers, n_heads = n_layers_heads(model)
    saved: dict[str, torch.Tensor] = {}
    layers = range(n_layers) if save else sorted(edits or {})
    with model.trace(tokens):
        for layer in layers:  # in forward order, as nnsight requires
            path, where, layout = comp.nnsight
            module = module_at(model, path.format(layer=layer))
            act = getattr(module, where)
            if save:
                saved[comp.hook.format(layer=layer)] = _to_layout(act, layout, n_heads).save()
            else:
                setattr(module, where, _from_layout(act, edits[layer](_to_layout(act, layout, n_heads)), layout))
        logits = model.lm_head.output.save()
    return logits, saved


# ------------------------------------------------------------------ inputs and metrics


def _encode(model, text: str, bos: bool = True) -> torch.Tensor:
    """Token ids [1, pos] of text, with BOS first as TransformerLens adds it, for either backend."""
    if not is_nnsight(model):
        return model.to_tokens(text, prepend_bos=bos)
    tokenizer = model.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([([tokenizer.bos_token_id] if bos else []) + ids])


def _str_tokens(model, ids: torch.Tensor) -> list[str]:
    return model.to_str_tokens(ids) if not is_nnsight(model) else model.tokenizer.convert_ids_to_tokens(ids.tolist())


def to_tokens(model, prompts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
    """Tokens [batch, pos] of one prompt, a list of prompts of equal token length, or a token tensor.

    BOS comes first with either backend (nnsight adds none by itself), so both see the same ids.
    """
    if isinstance(prompts, torch.Tensor):
        return prompts if prompts.ndim == 2 else prompts[None]
    if isinstance(prompts, str):
        return _encode(model, prompts)
    rows = [_encode(model, p)[0] for p in prompts]  # one by one: a list would be silently right-padded
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        short = min(range(len(rows)), key=lambda i: len(rows[i]))
        raise ValueError(
            f"these prompts have different token lengths ({sorted(lengths)}), e.g. {prompts[short]!r} has "
            f"{len(rows[short])}: padded, the last position of the shorter ones would be padding. Batch prompts "
            f"of one template, or patch them in separate calls.")
    return torch.stack(rows)


def same_shape(clean: torch.Tensor, corrupted: torch.Tensor, model=None) -> None:
    """Refuse clean and corrupted tokens that can't be patched position by position."""
    if clean.shape == corrupted.shape:
        return
    why = ""
    if model is not None and clean.shape[-1] != corrupted.shape[-1]:
        why = f" Clean is {_str_tokens(model, clean[0])}, corrupted {_str_tokens(model, corrupted[0])}."
    raise ValueError(
        f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ in shape: "
        f"patching copies activations position by position, so both prompts need the same number of tokens "
        f"(and the same batch size).{why} Pick a corruption with as many tokens (e.g. a landmark with as many "
        f"words), or corrupt with Gaussian noise on the same tokens (gaussian_noise).")


def answer_ids(model, words: str | Sequence[str]) -> torch.Tensor:
    """Token ids [n] of answer words; each must be a single token (write them with their leading space)."""
    words = [words] if isinstance(words, str) else list(words)
    unk = model.tokenizer.unk_token_id
    ids = []
    for w in words:
        toks = _encode(model, w, bos=False)[0]
        if len(toks) != 1:
            raise ValueError(
                f"the answer {w!r} is {len(toks)} tokens {_str_tokens(model, toks)}: a logit metric needs one "
                f"token per answer. Use an answer that is a single token (with its leading space, ' Paris'), or "
                f"compare the first token only and say so.")
        if unk is not None and toks[0] == unk and w.strip() != model.tokenizer.unk_token:
            raise ValueError(f"{w!r} is not in this model's vocabulary (it would become {model.tokenizer.unk_token}); "
                             f"the course model knows the words of its corpus only (mechlib.corpus.vocabulary())")
        ids.append(int(toks[0]))
    return torch.tensor(ids)


def logit_diff(answers: torch.Tensor, wrongs: torch.Tensor, pos: int = -1) -> Metric:
    """Metric: mean over prompts of logit(answer) - logit(wrong) at `pos`. answers, wrongs: [batch] ids."""
    answers, wrongs = answers.reshape(-1), wrongs.reshape(-1)
    if answers.shape != wrongs.shape:
        raise ValueError(f"{len(answers)} answers but {len(wrongs)} wrong answers: give one of each per prompt")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, pos]  # [batch, d_vocab]
        if len(answers) not in (1, len(last)):
            raise ValueError(f"{len(answers)} answers for a batch of {len(last)} prompts: give one per prompt")
        rows = torch.arange(len(last), device=last.device)
        a, w = answers.to(last.device), wrongs.to(last.device)
        return (last[rows, a] - last[rows, w]).mean()

    return metric


def normalized(metric: Metric, clean_logits: torch.Tensor, corrupted_logits: torch.Tensor) -> Metric:
    """`metric` rescaled so that the corrupted run scores 0 and the clean run 1."""
    clean, corrupted = metric(clean_logits.detach()).item(), metric(corrupted_logits.detach()).item()
    if abs(clean - corrupted) < 1e-6:
        raise ValueError(f"the metric is {clean:.4g} on both runs: the corruption changes nothing it measures, "
                         f"so there is nothing to restore. Choose another corruption or metric.")

    def scaled(logits: torch.Tensor) -> torch.Tensor:
        return (metric(logits) - corrupted) / (clean - corrupted)

    scaled.clean, scaled.corrupted = clean, corrupted  # the two baselines, for printing
    return scaled


def _scalar(value, where: str) -> torch.Tensor:
    value = torch.as_tensor(value)
    if value.numel() != 1:
        raise ValueError(f"the metric returned shape {tuple(value.shape)} {where}; it must return one number "
                         f"(e.g. average over the batch with .mean())")
    return value.reshape(())


# ------------------------------------------------------------------ corruptions


def gaussian_noise(model, tokens: torch.Tensor, positions: Sequence[int], scale: float = 3.0,
                   seed: int = 0) -> list[Hook]:
    """Hooks that corrupt the token embeddings at `positions` with noise of `scale` x the embeddings' std (ROME).

    The noise is drawn once, so every run with these hooks sees the same corruption; the hook also works on
    a batch that repeats `tokens` several times, as the batched sweeps do.
    """
    if is_nnsight(model):
        raise ValueError("gaussian_noise makes TransformerLens hooks: use a TransformerLens model, or add the noise "
                         "to transformer.wte's output inside an nnsight trace")
    std = model.W_E.std().item()
    g = torch.Generator().manual_seed(seed)
    noise = torch.zeros(*tokens.shape, model.cfg.d_model)  # [batch, pos, d_model]
    positions = list(positions)
    if not positions or max(positions) >= tokens.shape[-1] or min(positions) < -tokens.shape[-1]:
        raise ValueError(f"positions {positions} must be non-empty and within the prompt's {tokens.shape[-1]} tokens")
    noise[:, positions] = scale * std * torch.randn(tokens.shape[0], len(positions), model.cfg.d_model, generator=g)

    def add_noise(embed: torch.Tensor, hook) -> torch.Tensor:  # embed [rows, pos, d_model]
        n = noise.to(embed.device, embed.dtype)
        return (embed.view(-1, *n.shape) + n).view(embed.shape)

    return [("hook_embed", add_noise)]


# ------------------------------------------------------------------ patching


def _sites(model, comp: Component, n_pos: int) -> list[tuple[int, ...]]:
    n_layers, n_heads = n_layers_heads(model)
    sizes = {"layer": n_layers, "pos": n_pos, "head": n_heads}
    return list(itertools.product(*(range(sizes[a]) for a in comp.axes)))


def _mask(comp: Component, act_shape: torch.Size, sites: Sequence[tuple[int, ...]], layer: int) -> torch.Tensor:
    """Boolean [n_sites, 1, *act_shape] (broadcastable): where each site patches, for the hook of `layer`."""
    shape = [act_shape[d] if d in comp.dims.values() else 1 for d in range(comp.ndim)]
    mask = torch.zeros(len(sites), 1, *shape, dtype=torch.bool)
    for i, site in enumerate(sites):
        if site[0] != layer:
            continue
        index = [0] * comp.ndim
        for axis, value in zip(comp.axes[1:], site[1:]):
            index[comp.dims[axis]] = value
        mask[(i, 0, *index)] = True
    return mask


def patch_sweep(model, base_tokens: torch.Tensor, source_cache, metric: Metric, component_name: str,
                base_hooks: Sequence[Hook] = (), max_rows: int = 256, progress: bool = False) -> torch.Tensor:
    """Patch every site of a component, one site per batch row: run base_tokens with that site's activation
    taken from source_cache, and return the metric per site, shaped by the component's axes.

    Denoising: base = corrupted tokens, source = the clean cache. Noising: the other way round.
    base_hooks (a corruption such as gaussian_noise) apply to every patched run.
    """
    comp = component(component_name, model)
    if base_hooks and is_nnsight(model):
        raise ValueError("base_hooks are TransformerLens hooks: corrupt an nnsight run inside its own trace, or use "
                         "a TransformerLens model for gaussian_noise")
    n_prompts, n_pos = base_tokens.shape
    sites = _sites(model, comp, n_pos)
    per_pass = max(1, max_rows // n_prompts)
    results = []
    chunks = range(0, len(sites), per_pass)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"patching {component_name}", leave=False)
    for start in chunks:
        chunk = sites[start:start + per_pass]
        edits = {}  # layer -> fn(activation [rows, ...]) -> patched activation
        for layer in sorted({s[0] for s in chunk}):
            source = source_cache[comp.hook.format(layer=layer)]  # [n_prompts, ...]
            mask = _mask(comp, source.shape[1:], chunk, layer).to(source.device)

            def edit(act: torch.Tensor, source=source, mask=mask) -> torch.Tensor:
                rows = act.reshape(len(mask), *source.shape)  # [n_sites, n_prompts, ...]
                return torch.where(mask, source[None], rows).reshape(act.shape)

            edits[layer] = edit
        rows = base_tokens.repeat(len(chunk), 1)
        with torch.inference_mode():
            if is_nnsight(model):
                logits, _ = _nnsight_run(model, rows, comp, edits)
            else:
                hooks = list(base_hooks) + [(comp.hook.format(layer=layer), lambda act, hook, f=f: f(act))
                                            for layer, f in edits.items()]
                logits = model.run_with_hooks(rows, fwd_hooks=hooks)
        logits = logits.view(len(chunk), n_prompts, *logits.shape[1:])  # [n_sites, n_prompts, pos, d_vocab]
        results.append(per_site(metric, logits, chunk))
    n_layers, n_heads = n_layers_heads(model)
    sizes = [n_layers] + [n_pos if a == "pos" else n_heads for a in comp.axes[1:]]
    return torch.cat(results).view(sizes).cpu().clone()  # clone: a normal tensor, not an inference-mode one


def per_site(metric: Metric, logits: torch.Tensor, sites: Sequence) -> torch.Tensor:
    """metric of each site's logits [n_sites, n_prompts, pos, d_vocab] -> [n_sites].

    Vectorised with torch.func.vmap where the metric allows it (plain tensor code does), else one call per site.
    """
    try:
        values = torch.func.vmap(metric)(logits)
    except Exception:  # .item(), data-dependent control flow, ...: call it site by site
        values = [metric(x) for x in logits]
    return torch.stack([_scalar(v, f"for site {s}") for s, v in zip(sites, values)])


def run_cache(model, tokens: torch.Tensor, hooks: Sequence[Hook] = (), names: Sequence[str] | None = None):
    """Logits and a cache of `names` (every hook if None) for one run, with optional corrupting hooks.

    TransformerLens only; component_cache does the same for one component with either backend.
    """
    if is_nnsight(model):
        raise ValueError("run_cache takes a TransformerLens model; with nnsight use component_cache(model, tokens, "
                         "component) or save the modules you need inside a trace")
    names_filter = None if names is None else (lambda n: n in set(names))
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model.run_with_cache(tokens, names_filter=names_filter)


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
        return _nnsight_run(model, tokens, comp, save=True)


def _runs(model, clean, corrupted, direction: str, corrupted_hooks: Sequence[Hook]) -> tuple:
    """(base tokens, base hooks, source tokens, source hooks) for a direction: denoising runs the corrupted
    input with clean activations patched in, noising the other way round."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' (clean into corrupted) or 'noise' (corrupted into clean), "
                         f"not {direction!r}")
    clean, corrupted = to_tokens(model, clean), to_tokens(model, corrupted)
    same_shape(clean, corrupted, model)
    if direction == "denoise":
        return corrupted, list(corrupted_hooks), clean, []
    return clean, [], corrupted, list(corrupted_hooks)


def patch(model, clean: torch.Tensor | str | Sequence[str], corrupted: torch.Tensor | str | Sequence[str],
          metric: Metric, component_name: str, direction: str = "denoise", corrupted_hooks: Sequence[Hook] = (),
          max_rows: int = 256, progress: bool = False) -> torch.Tensor:
    """Activation patching of every site of a component between a clean and a corrupted run.

    direction "denoise" patches clean activations into the corrupted run (what is *sufficient* to restore the
    behaviour); "noise" patches corrupted activations into the clean run (what is *necessary*).
    corrupted_hooks corrupt the corrupted run further, e.g. gaussian_noise on the same tokens as clean.
    Returns the metric per site: [layer, pos], [layer, head] or [layer, pos, head].
    """
    base, base_hooks, source_tokens, source_hooks = _runs(model, clean, corrupted, direction, corrupted_hooks)
    _, source = component_cache(model, source_tokens, component_name, source_hooks)
    return patch_sweep(model, base, source, metric, component_name, base_hooks, max_rows, progress)


def head_patching_loop(model, corrupted_tokens: torch.Tensor, clean_cache, metric: Metric) -> torch.Tensor:
    """The reference text's loop: one forward pass per head, patching that head's z from the clean cache.

    Slow but plain; the batched patch_sweep(..., "head_out") is checked and benchmarked against it.
    """
    results = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            hook_name = f"blocks.{layer}.attn.hook_z"

            def patch_hook(activation, hook, head=head, hook_name=hook_name):  # activation [batch, pos, head, d_head]
                activation[:, :, head, :] = clean_cache[hook_name][:, :, head, :]
                return activation

            with torch.no_grad():
                logits = model.run_with_hooks(corrupted_tokens,
                                              fwd_hooks=[(hook_name, patch_hook)])
            results[layer, head] = metric(logits).item()
    return results


# ------------------------------------------------------------------ attribution patching


def attribution_patch(model, clean: torch.Tensor | str | Sequence[str], corrupted: torch.Tensor | str | Sequence[str],
                      metric: Metric, component_name: str, direction: str = "denoise",
                      corrupted_hooks: Sequence[Hook] = ()) -> torch.Tensor:
    """Attribution patching: the first-order estimate of `patch`'s result, from two forward passes and one backward.

    metric(patched) ~ metric(base) + (source - base) . d metric / d activation, with the gradient taken on
    the base run. Same directions, components and result shape as `patch`.
    """
    base, base_hooks, source_tokens, source_hooks = _runs(model, clean, corrupted, direction, corrupted_hooks)
    comp = component(component_name, model)
    names = [comp.hook.format(layer=layer) for layer in range(n_layers_heads(model)[0])]
    _, source = component_cache(model, source_tokens, component_name, source_hooks)
    value, acts, grads = (_nnsight_gradients if is_nnsight(model) else _tl_gradients)(model, base, comp, metric,
                                                                                       names, base_hooks)
    per_layer = []
    for name in names:
        effect = (source[name] - acts[name]) * grads[name]  # [batch, ...]
        keep_dims = sorted(comp.dims.values())
        per_layer.append(effect.sum(dim=[0] + [d + 1 for d in range(comp.ndim) if d not in keep_dims]))
    # every component lists its axes in activation order, so the sums come out as [layer, *axes]
    return (value + torch.stack(per_layer)).detach().cpu()


def _tl_gradients(model, tokens, comp, metric, names, hooks) -> tuple[float, dict, dict]:
    """The metric on one run, and each named activation with the metric's gradient, via hooks."""
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable:
        def hook(act: torch.Tensor, hook) -> torch.Tensor:  # hook.name can be an alias's target: key by our name
            act.retain_grad()
            acts[name] = act
            return act

        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(hooks) + [(n, keep(n)) for n in names])
        value = _scalar(metric(logits), "on the base run")
        value.backward()
    model.zero_grad(set_to_none=True)
    if any(acts[n].grad is None for n in names):
        raise RuntimeError("no gradient reached the activations: is the model in no_grad or inference mode?")
    return value.item(), {n: a.detach() for n, a in acts.items()}, {n: acts[n].grad for n in names}


def _nnsight_gradients(model, tokens, comp, metric, names, hooks) -> tuple[float, dict, dict]:
    """The same with nnsight: read the modules in a trace, then their .grad inside value.backward()."""
    if hooks:
        raise ValueError("hooks are TransformerLens hooks; an nnsight model takes its corruption inside a trace")
    path, where, layout = comp.nnsight
    n_heads = n_layers_heads(model)[1]
    acts, grads = [], {}
    with torch.enable_grad(), model.trace(tokens):
        for layer in range(len(names)):
            acts.append(getattr(module_at(model, path.format(layer=layer)), where).save())
        value = _scalar(metric(model.lm_head.output), "on the base run")
        saved_value = value.save()
        with value.backward():
            for layer in reversed(range(len(names))):  # gradients arrive last layer first
                grads[layer] = acts[layer].grad.save()
    model.zero_grad(set_to_none=True)
    return (saved_value.item(), {n: _to_layout(acts[i].detach(), layout, n_heads) for i, n in enumerate(names)},
            {n: _to_layout(grads[i], layout, n_heads) for i, n in enumerate(names)})


# ------------------------------------------------------------------ path patching


def path_patch(model, clean: torch.Tensor | str | Sequence[str], corrupted: torch.Tensor | str | Sequence[str],
               metric: Metric, receivers: Sequence[tuple[int, int]] | str = "logits", receiver_input: str = "q",
               max_rows: int = 256) -> torch.Tensor:
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
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(n_layers)]
    _, clean_cache = run_cache(model, clean, names=z_names)
    _, corrupted_cache = run_cache(model, corrupted, names=z_names)
    senders = [(l, h) for l in range(n_layers) for h in range(n_heads) if l < last]
    n_prompts = clean.shape[0]
    per_pass = max(1, max_rows // n_prompts)
    out = torch.full((n_layers, n_heads), float("nan"))
    for start in range(0, len(senders), per_pass):
        chunk = senders[start:start + per_pass]
        rows = clean.repeat(len(chunk), 1)
        freeze = []
        for layer in range(n_layers):
            is_sender = torch.zeros(len(chunk), 1, 1, n_heads, 1, dtype=torch.bool)  # [sites, 1, 1, head, 1]
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
            r_names = sorted({f"blocks.{l}.attn.hook_{receiver_input}" for l, _ in receivers})

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


# ------------------------------------------------------------------ datasets


@dataclass
class PromptPairs:
    """Clean and corrupted prompts of one template, with the answer and the wrong answer of each clean prompt."""

    clean: list[str]
    corrupted: list[str]
    answers: list[str]  # " Mary": with the leading space, as the next token
    wrongs: list[str]


def ioi_prompts(n: int, template: int = 0, corruption: str = "s2_io", seed: int = 0) -> PromptPairs:
    """n IOI prompts of one trained frame of mechlib.corpus (IOI_TEMPLATES), with trained names, and their corruption.

    corruption "s2_io": the second subject becomes the indirect object ("..., Mary gave a drink to"), a
    symmetric token replacement that flips the answer (Zhang & Nanda 2023). "abc": three fresh, unrelated
    names (the IOI paper's ABC dataset), which removes the information without pointing elsewhere.
    """
    from mechlib.corpus import IOI_NAMES, IOI_TEMPLATES, OBJECTS, PLACES

    if corruption not in ("s2_io", "abc"):
        raise ValueError(f"corruption must be 's2_io' or 'abc', not {corruption!r}")
    if not 0 <= template < len(IOI_TEMPLATES):
        raise ValueError(f"template must be 0..{len(IOI_TEMPLATES) - 1}")
    rng = random.Random(seed)
    text = IOI_TEMPLATES[template]
    with_s2 = text.replace("{B}", "{S2}").replace("{S2}", "{B}", 1)  # the second mention of B gets its own slot
    pairs = PromptPairs([], [], [], [])
    for _ in range(n):
        a, b, c, d, e = rng.sample(IOI_NAMES, 5)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        pairs.clean.append(text.format(A=a, B=b, place=place, object=obj))
        names = dict(A=a, B=b, S2=a) if corruption == "s2_io" else dict(A=c, B=d, S2=e)
        pairs.corrupted.append(with_s2.format(**names, place=place, object=obj))
        pairs.answers.append(" " + a)
        pairs.wrongs.append(" " + b)
    return pairs
