"""Checks of lesson 05's exercises (nnsight)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, patching_cases, run_check


def check_nnsight_head_patch(patch_head: Callable, model) -> Checked:
    """patch_head(model, clean, corrupted, layer, head) -> logits of the corrupted run with one head from clean."""
    from mechlib.components import COMPONENTS, component_cache, nnsight_run

    def reference(model, clean, corrupted, layer, head):
        _, cache = component_cache(model, clean, "head_out")
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [batch, pos, head, d_head]

        def edit(act):
            act = act.clone()
            act[:, :, head] = z[:, :, head]
            return act

        with torch.no_grad():
            return nnsight_run(model, corrupted, COMPONENTS["head_out"], {layer: edit})[0]

    learner = lambda *args: patch_head(*args).detach()
    cases = [(model, clean, corrupted, layer, head)
             for (clean, corrupted, _), (layer, head) in zip(patching_cases(model), [(0, 2), (2, 3)])]
    cases.append((model, cases[0][1], cases[0][2], 3, 2))
    return run_check("head patching in nnsight", learner, reference, cases, atol=1e-4, learner=patch_head,
                     hint="head h is columns h * d_head to (h + 1) * d_head of transformer.h[layer].attn.c_proj.input; "
                          "in the corrupted invoke read that input first, then assign the clean columns")


def check_nnsight_logit_lens(lens: Callable, model) -> Checked:
    """lens(model, tokens, answer) -> [n_layers]: P(answer) at the last position after each block."""
    hf = model._module  # the plain torch model underneath

    def reference(model, tokens, answer):
        with torch.no_grad():
            hidden = hf(tokens, output_hidden_states=True).hidden_states[1:]  # after each block (the last after ln_f)
            outs = [hf.lm_head(hf.transformer.ln_f(h)) for h in hidden[:-1]] + [hf(tokens).logits]
        return torch.stack([o.softmax(-1)[0, -1, answer] for o in outs])

    cases = [(model, clean, int(answer)) for (clean, _, _), answer in
             zip(patching_cases(model), [model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0], 5])]
    learner = lambda *args: torch.as_tensor(lens(*args)).detach().float()
    return run_check("logit lens in nnsight", learner, reference, cases, atol=1e-4, learner=lens,
                     hint="model.lm_head(model.transformer.ln_f(model.transformer.h[layer].output)) inside the trace, "
                          "then .softmax(-1)[0, -1, answer]")


def check_nnsight_attribution(attribute: Callable, model) -> Checked:
    """attribute(model, clean, corrupted, metric) -> [layer, head], as attribution_patch(..., "head_out")."""
    from mechlib.patching import attribution_patch

    def reference(model, clean, corrupted, metric):
        return attribution_patch(model, clean, corrupted, metric, "head_out")

    cases = [(model, clean, corrupted, metric) for clean, corrupted, metric in patching_cases(model)]
    learner = lambda *args: attribute(*args).detach().cpu()
    return run_check("attribution patching in nnsight", learner, reference, cases, atol=1e-4, learner=attribute,
                     hint="save every c_proj input in the corrupted trace, then inside `with value.backward():` save "
                          "their .grad from the last layer to the first; add metric(corrupted) to the sum")
