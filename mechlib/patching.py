"""Activation patching, batched: which components carry a behaviour (lesson 04).

Run the model on a clean prompt and a corrupted one, then re-run one of them with one component's
activation taken from the other run, and measure how much of the behaviour comes back (denoising:
clean into corrupted) or goes away (noising: corrupted into clean).

    metric = normalized(logit_diff(answers, wrongs), clean_logits, corrupted_logits)  # 0 corrupted, 1 clean
    heads = patch(model, clean_tokens, corrupted_tokens, metric, "head_out")  # [layer, head]

Every patch is one row of a batch: a sweep over all heads costs one or a few forward passes, not one per
head. `head_patching_loop` is the reference text's loop, kept as the reference the batched code is
checked (and benchmarked) against. Also here: the ROME Gaussian-noise corruption and attribution
patching (the gradient approximation). Components live in components.py, prompts in prompts.py, path
patching in path_patching.py.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Sequence

import torch

from mechlib.components import (COMPONENTS, Component, Hook, component, component_cache, n_layers_heads,
                                nnsight_run, run_cache, to_layout)
from mechlib.loading import is_nnsight, model_device, module_at
from mechlib.prompts import same_shape, to_tokens

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits [batch, pos, d_vocab] -> scalar

__all__ = ["COMPONENTS", "Metric", "attribution_patch", "component_cache", "gaussian_noise", "head_patching_loop",
           "logit_diff", "normalized", "patch", "patch_sweep", "per_site", "run_cache",
           "site_chunks"]

# ------------------------------------------------------------------ metrics


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
    noise = noise.to(model_device(model))  # drawn on the CPU, so every device sees the same noise

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


def site_chunks(sites: Sequence, n_prompts: int, max_rows: int = 256, progress: str | None = None) -> Iterator[list]:
    """The sites in chunks of at most max_rows // n_prompts, each chunk one batch of n_sites x n_prompts rows;
    with a progress bar labelled `progress` if given."""
    per_pass = max(1, max_rows // n_prompts)
    starts = range(0, len(sites), per_pass)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress, leave=False)
    for start in starts:
        yield list(sites[start:start + per_pass])


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
    base_tokens = to_tokens(model, base_tokens)  # on the model's device
    n_prompts, n_pos = base_tokens.shape
    sites = _sites(model, comp, n_pos)
    results = []
    for chunk in site_chunks(sites, n_prompts, max_rows, f"patching {component_name}" if progress else None):
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
                logits, _ = nnsight_run(model, rows, comp, edits)
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
    corrupted_tokens = to_tokens(model, corrupted_tokens)  # on the model's device
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
    return (saved_value.item(), {n: to_layout(acts[i].detach(), layout, n_heads) for i, n in enumerate(names)},
            {n: to_layout(grads[i], layout, n_heads) for i, n in enumerate(names)})
