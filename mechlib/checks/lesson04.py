"""Checks of lesson 04's exercises (activation patching)."""

from __future__ import annotations

from typing import Callable

from mechlib.checks.common import Checked, patching_cases, run_check


def _with_clean_cache(model) -> list[tuple]:
    """(model, corrupted tokens, clean cache, metric) for the TransformerLens checks."""
    from mechlib.components import run_cache

    return [(model, corrupted, run_cache(model, clean)[1], metric) for clean, corrupted, metric in patching_cases(model)]


def check_head_patching_loop(loop: Callable, model) -> Checked:
    """loop(model, corrupted_tokens, clean_cache, metric) -> [layer, head]: the reference text's per-head loop."""
    from mechlib.patching import head_patching_loop

    return run_check("per-head patching loop", loop, head_patching_loop, _with_clean_cache(model), atol=1e-5,
                     hint="for each layer and head: a hook on blocks.{layer}.attn.hook_z that sets "
                          "activation[:, :, head, :] to the clean cache's, then model.run_with_hooks(corrupted_tokens, "
                          "fwd_hooks=[(name, hook)]) and results[layer, head] = metric(logits).item()")


def check_batched_head_sweep(sweep: Callable, model) -> Checked:
    """sweep(model, corrupted_tokens, clean_cache, metric) -> [layer, head], in one batched forward pass."""
    from mechlib.patching import patch_sweep

    def reference(model, corrupted, cache, metric):
        return patch_sweep(model, corrupted, cache, metric, "head_out")

    return run_check("batched head sweep", sweep, reference, _with_clean_cache(model), atol=1e-5,
                     hint="repeat the tokens once per head (tokens.repeat(n_layers * n_heads, 1)); in layer L's hook, "
                          "view the activation as [n_layers * n_heads, batch, pos, head, d_head] and give site "
                          "i = L * n_heads + h its clean head h; then view the logits the same way and apply the "
                          "metric to each site's slice")


def check_attribution_heads(attribute: Callable, model) -> Checked:
    """attribute(model, clean_tokens, corrupted_tokens, metric) -> [layer, head]: attribution patching of the
    heads' outputs (denoising), as an estimate of the patched metric."""
    from mechlib.patching import attribution_patch

    def reference(model, clean, corrupted, metric):
        return attribution_patch(model, clean, corrupted, metric, "head_out")

    cases = [(model, clean, corrupted, metric) for clean, corrupted, metric in patching_cases(model)]
    return run_check("attribution patching of heads", attribute, reference, cases, atol=1e-4,
                     hint="keep each hook_z of the corrupted run with act.retain_grad(), backpropagate the metric, "
                          "then metric(corrupted) + ((clean_z - corrupted_z) * grad).sum over batch, pos and d_head")
