"""Steering: change what a model does by adding to (or clamping inside) its residual stream (lesson 06).

    vector = steering_vector(model, ["The Eiffel Tower is in"], ["The Colosseum is in"], "blocks.2.hook_resid_pre")
    hook = add_vector(vector, coefficient=4.0)            # activation addition (Turner et al. 2023)
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.hook_resid_pre", hook)])
    hook = clamp_latent(sae, latent=823, value=6.0)       # SAE feature steering

ActAdd as Turner et al. (2023) define it takes a prompt pair's activations at *every* position and adds
them at the *front* of the steered prompt (`prompt_difference`, `add_at_front`); one difference vector added
everywhere, from one pair or the means of many prompts (`steering_vector`, `add_vector`), is contrastive or
mean-difference steering (Rimsky et al. 2024; Marks & Tegmark 2023). `steering_sweep` measures the effect on a
target token and the cost (loss on unrelated text) over a range of coefficients, the two numbers every steering
claim needs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from mechlib.prompts import last_logits, to_tokens

Hook = Callable[[torch.Tensor, object], torch.Tensor]


def mean_activation(model, prompts: Sequence[str], hook_name: str, pos: int = -1) -> torch.Tensor:
    """Mean of one hook's activation at position `pos` over prompts (of any lengths).  # [d_model]"""
    if not prompts:
        raise ValueError("give at least one prompt")
    if hook_name not in model.hook_dict:
        raise ValueError(f"no hook named {hook_name!r}: e.g. 'blocks.2.hook_resid_pre' (model.hook_dict lists them all)")
    acts = []
    for prompt in prompts:  # one at a time: prompts of different lengths, each at its own last position
        with torch.no_grad():
            _, cache = model.run_with_cache(to_tokens(model, prompt), names_filter=hook_name)
        acts.append(cache[hook_name][0, pos])
    return torch.stack(acts).mean(0)


def steering_vector(model, positive: Sequence[str], negative: Sequence[str], hook_name: str,
                    pos: int = -1) -> torch.Tensor:
    """mean(activations on positive prompts) - mean(on negative ones) at `pos`.  # [d_model]

    One prompt each is ActAdd's contrastive pair; many each is mean-difference steering.
    """
    return mean_activation(model, positive, hook_name, pos) - mean_activation(model, negative, hook_name, pos)


def prompt_difference(model, positive: str, negative: str, hook_name: str) -> torch.Tensor:
    """ActAdd's steering vectors (Turner et al. 2023): hook_name's activations on `positive` minus those on
    `negative`, at every position, BOS included. Both prompts must have the same number of tokens (Turner et al.
    pad the shorter one with spaces).  # [pos, d_model]"""
    tokens = [to_tokens(model, p) for p in (positive, negative)]
    if tokens[0].shape != tokens[1].shape:
        raise ValueError(f"{positive!r} has {tokens[0].shape[1]} tokens and {negative!r} {tokens[1].shape[1]}: an "
                         "ActAdd pair needs equal lengths; pad the shorter prompt (e.g. with spaces) or pick another pair")
    with torch.no_grad():
        acts = [model.run_with_cache(t, names_filter=hook_name)[1][hook_name][0] for t in tokens]
    return acts[0] - acts[1]


def add_at_front(vectors: torch.Tensor, coefficient: float) -> Hook:
    """ActAdd's injection: coefficient * vectors [n, d_model] added to the first n positions of a [batch, pos, d_model]
    activation (the steered prompt must have at least n tokens)."""

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        n = vectors.shape[0]
        if act.shape[1] < n:
            raise ValueError(f"the steered prompt has {act.shape[1]} tokens, fewer than the {n} ActAdd adds at its front")
        act = act.clone()
        act[:, :n] += coefficient * vectors.to(act.device, act.dtype)
        return act

    return hook


def _positions(act: torch.Tensor, positions: Sequence[int] | None) -> torch.Tensor | slice:
    return slice(None) if positions is None else torch.as_tensor(list(positions), device=act.device)


def add_vector(vector: torch.Tensor, coefficient: float, positions: Sequence[int] | None = None) -> Hook:
    """A hook adding coefficient * vector at `positions` (all if None) of a [batch, pos, d_model] activation."""

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        act = act.clone()
        act[:, _positions(act, positions)] += coefficient * vector.to(act.device, act.dtype)
        return act

    return hook


def clamp_latent(sae, latent: int, value: float, positions: Sequence[int] | None = None) -> Hook:
    """A hook that sets one SAE latent to `value` at `positions` (all if None), leaving everything the SAE
    does not explain untouched: act + (value - current) * W_dec[latent]."""
    if not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent {latent} is outside the SAE's {sae.cfg.d_sae} latents")

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        act = act.clone()
        where = _positions(act, positions)
        direction = sae.W_dec[latent]  # [d_model]: the row the SAE's forward pass decodes with
        current = sae.encode(act[:, where].to(direction.device, direction.dtype))[..., latent]  # [batch, n_pos]
        act[:, where] += ((value - current)[..., None] * direction).to(act.device, act.dtype)
        return act

    return hook


def generate(model, prompt: str, n: int = 5, fwd_hooks: Sequence[tuple[str, Hook]] = ()) -> str:
    """n greedy tokens after prompt, with hooks applied at every step (no KV cache, so every position sees them)."""
    tokens = to_tokens(model, prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
            tokens = torch.cat([tokens, logits[:, -1:].argmax(-1)], dim=1)
    return model.tokenizer.decode(tokens[0, -n:])


def target_probability(model, prompts: Sequence[str], target: int, fwd_hooks: Sequence[tuple[str, Hook]] = ()) -> float:
    """Mean probability of token `target` at the last position of each prompt (batched by token length)."""
    return last_logits(model, prompts, fwd_hooks).softmax(-1)[:, target].mean().item()


def text_loss(model, tokens: torch.Tensor, fwd_hooks: Sequence[tuple[str, Hook]] = ()) -> float:
    """Mean next-token loss on tokens [batch, pos] with hooks: what steering costs on unrelated text."""
    with torch.no_grad():
        return model.run_with_hooks(to_tokens(model, tokens), return_type="loss", fwd_hooks=list(fwd_hooks)).item()


def steering_sweep(model, prompts: Sequence[str], target: int, hook_name: str, make_hook: Callable[[float], Hook],
                   coefficients: Sequence[float], unrelated: torch.Tensor) -> dict[str, list[float]]:
    """For each coefficient c: the target token's mean probability on the prompts and the loss on unrelated
    text [batch, pos], both run with make_hook(c) on hook_name. Returns lists by name."""
    out: dict[str, list[float]] = {"coefficient": [], "target probability": [], "loss on unrelated text": []}
    for c in coefficients:
        hook = make_hook(c)
        out["coefficient"].append(float(c))
        out["target probability"].append(target_probability(model, prompts, target, [(hook_name, hook)]))
        out["loss on unrelated text"].append(text_loss(model, unrelated, [(hook_name, hook)]))
    return out
