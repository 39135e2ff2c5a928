"""Exercise checks: run a learner's function and the reference on the same fresh inputs, and say
"passed" or where the first mismatch is, with a hint.

Each lesson's checks (check_residual_decomposition, ...) are thin wrappers around `run_check`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch


def first_mismatch(got: Any, want: Any, atol: float = 1e-4, rtol: float = 1e-4, where: str = "result") -> str:
    """"" if got matches want (tensors to atol/rtol, containers element by element), else what differs."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a torch.Tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.is_floating_point() != want.is_floating_point():
            return f"{where} has dtype {got.dtype}, expected {want.dtype}"
        g, w = got.detach().cpu().to(want.dtype), want.detach().cpu()
        bad = ~torch.isclose(g, w, atol=atol, rtol=rtol)
        if want.is_floating_point():
            bad |= torch.isnan(g) & ~torch.isnan(w)
        if bad.any():
            idx = tuple(bad.nonzero()[0].tolist())
            return (f"{where}[{', '.join(map(str, idx))}] is {g[idx].item():.6g}, expected {w[idx].item():.6g} "
                    f"({int(bad.sum())} of {bad.numel()} entries differ)")
        return ""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where} should be a sequence of {len(want)} items, got {type(got).__name__}" + (
                f" of {len(got)}" if isinstance(got, (list, tuple)) else "")
        for i, (g, w) in enumerate(zip(got, want)):
            msg = first_mismatch(g, w, atol, rtol, f"{where}[{i}]")
            if msg:
                return msg
        return ""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{where} should be a dict with keys {sorted(want)}, got {sorted(got) if isinstance(got, dict) else type(got).__name__}"
        for k in want:
            msg = first_mismatch(got[k], want[k], atol, rtol, f"{where}[{k!r}]")
            if msg:
                return msg
        return ""
    if isinstance(want, float):
        if not isinstance(got, (int, float)) or abs(got - want) > atol + rtol * abs(want):
            return f"{where} is {got!r}, expected {want:.6g}"
        return ""
    return "" if got == want else f"{where} is {got!r}, expected {want!r}"


def run_check(name: str, learner_fn: Callable, reference_fn: Callable, cases: Iterable[Sequence[Any]],
              hint: str = "", atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    """Call learner_fn(*case) and reference_fn(*case) for each case; print a pass or the first mismatch."""
    n = 0
    for n, case in enumerate(cases, 1):
        try:
            got = learner_fn(*case)
        except NotImplementedError:
            print(f"✗ {name}: not implemented yet. Replace the `raise NotImplementedError` with your code.")
            return False
        except Exception as e:  # the learner's bug: report it, don't crash the notebook
            print(f"✗ {name}: your function raised {type(e).__name__}: {e}" + (f"\n  hint: {hint}" if hint else ""))
            return False
        msg = first_mismatch(got, reference_fn(*case), atol, rtol)
        if msg:
            print(f"✗ {name}: on test input {n}, {msg}." + (f"\n  hint: {hint}" if hint else ""))
            return False
    print(f"✓ {name}: passed on {n} test input{'s' if n != 1 else ''}.")
    return True


# ---------------------------------------------------------------- lesson 01


def _random_prompts(model, n: int = 2, length: int = 8, seed: int = 0) -> torch.Tensor:
    """Fresh inputs for a check: BOS + random tokens.  # [n, 1 + length]"""
    g = torch.Generator().manual_seed(seed)
    bos = model.tokenizer.bos_token_id or 0
    body = torch.randint(3, model.cfg.d_vocab, (n, length), generator=g)
    return torch.cat([torch.full((n, 1), bos), body], dim=1).to(model.cfg.device)


def check_residual_decomposition(decompose: Callable, model) -> bool:
    """decompose(model, cache) -> (components [component, batch, pos, d_model], labels), as residual_components."""
    from mechlib.residual import residual_components

    cases = []
    for seed in (1, 2):
        _, cache = model.run_with_cache(_random_prompts(model, seed=seed))
        cases.append((model, cache))
    return run_check("residual decomposition", decompose, residual_components, cases,
                     hint="per layer: each head's hook_z @ W_O[layer, head], then b_O[layer], then hook_mlp_out; "
                          "start with hook_embed and hook_pos_embed")


def check_logit_attribution(attribute: Callable, model) -> bool:
    """attribute(model, cache, components, direction) -> [component, batch] at the last position."""
    from mechlib.residual import direct_logit_attribution, residual_components

    cases = []
    for seed in (1, 2):
        _, cache = model.run_with_cache(_random_prompts(model, seed=seed))
        components, _ = residual_components(model, cache)
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randint(3, model.cfg.d_vocab, (2,), generator=g).tolist()
        cases.append((model, cache, components, model.W_U[:, a] - model.W_U[:, b]))
    return run_check("direct logit attribution", attribute,
                     lambda m, cache, comps, d: direct_logit_attribution(cache, comps, d), cases,
                     hint="take the last position, scale by the final LayerNorm with cache.apply_ln_to_stack("
                          "..., layer=-1, pos_slice=-1), then project onto the direction")


def check_induction_scores(score: Callable, model) -> bool:
    """score(cache, seq_len) -> [layer, head], as mechlib.attention.induction_scores."""
    from mechlib.attention import induction_scores

    cases = []
    for seed, n in ((1, 10), (2, 15)):
        g = torch.Generator().manual_seed(seed)
        span = torch.randint(3, model.cfg.d_vocab, (4, n), generator=g)
        tokens = torch.cat([torch.full((4, 1), model.tokenizer.bos_token_id or 0), span, span], 1)
        _, cache = model.run_with_cache(tokens.to(model.cfg.device), names_filter=lambda h: h.endswith("hook_pattern"))
        cases.append((cache, n))
    return run_check("induction scores", score, induction_scores, cases,
                     hint="a query at position q in the second copy should attend to key q - seq_len + 1; "
                          "average over the second copy's queries and the batch")


# ---------------------------------------------------------------- lesson 02


def _toy_cases(seed: int, n_features: int = 5, n_hidden: int = 2, n_instances: int = 3, batch: int = 16):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_instances, n_hidden, n_features, generator=g)  # [instance, hidden, feature]
    b = torch.randn(n_instances, n_features, generator=g)  # [instance, feature]
    x = torch.rand(batch, n_instances, n_features, generator=g) * (torch.rand(batch, n_instances, n_features, generator=g) < 0.3)
    return W, b, x


def check_toy_forward(forward: Callable) -> bool:
    """forward(W [instance, hidden, feature], b [instance, feature], x [batch, instance, feature]) -> [batch, instance, feature]."""
    from mechlib.toy_models import toy_forward

    cases = [_toy_cases(1), _toy_cases(2, n_features=7, n_hidden=3, n_instances=2)]
    return run_check("toy model forward pass", forward, toy_forward, cases,
                     hint="hidden = W x for each instance (torch.einsum('ihf,bif->bih', W, x)), then W^T hidden, "
                          "then + b and ReLU")


def check_weighted_loss(loss: Callable) -> bool:
    """loss(x, out [batch, instance, feature], importance [instance, feature]) -> [instance]."""
    from mechlib.toy_models import weighted_mse

    cases = []
    for seed in (1, 2):
        W, b, x = _toy_cases(seed)
        g = torch.Generator().manual_seed(seed + 10)
        cases.append((x, torch.rand(x.shape, generator=g), torch.rand(x.shape[1:], generator=g)))
    return run_check("importance-weighted loss", loss, weighted_mse, cases,
                     hint="weight each feature's squared error by its importance, sum over features, "
                          "average over the batch: one number per instance")


def check_feature_dimensionality(dimensionality: Callable) -> bool:
    """dimensionality(W [instance, hidden, feature]) -> [instance, feature], as toy_models.feature_dimensionality."""
    from mechlib.toy_models import feature_dimensionality

    W, _, _ = _toy_cases(3, n_features=6, n_hidden=3)
    W[1, :, 2] = 0.0  # a feature that is not represented: dimensionality 0, not NaN
    return run_check("feature dimensionality", dimensionality, lambda w: feature_dimensionality(w), [(W,)],
                     hint="D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 with W_i the column of feature i; divide "
                          "by the norm plus a small epsilon so that a zero column gives 0, not NaN", atol=1e-4)


# ---------------------------------------------------------------- lesson 03


def _sae_pair(cls: type, seed: int, d_in: int = 8, d_sae: int = 32, l1: float = 0.3):
    """The learner's SAE class and mechlib's StandardSAE, with the same random (non-trivial) weights."""
    from mechlib.sae import SAEConfig, StandardSAE

    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="standard", l1_coefficient=l1, seed=seed)
    ref, mine = StandardSAE(cfg), cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            value = torch.randn(getattr(ref, name).shape, generator=g) * (0.3 if name == "b_enc" else 1.0)
            getattr(ref, name).copy_(value)
            getattr(mine, name).copy_(value)
    return mine, ref, torch.randn(16, d_in, generator=g) + 0.5


def check_reference_sae(cls: type) -> bool:
    """cls: a subclass of mechlib.sae.SAE that is the reference text's SAE (pre_activation, activate,
    sparsity_loss, after_step). Compared with mechlib's StandardSAE on the same weights."""
    steps = [
        ("pre_activation (the input centred by b_dec, then the encoder)", lambda s, x: s.pre_activation(x),
         "(x - b_dec) @ W_enc + b_enc: W_enc is [d_in, d_sae]"),
        ("activate", lambda s, x: s.activate(s.pre_activation(x)), "the reference SAE's activation is a ReLU"),
        ("encode", lambda s, x: s.encode(x), "encode = activate(pre_activation(x)): keep the base class's"),
        ("sparsity_loss", lambda s, x: s.sparsity_loss(s.encode(x), s.pre_activation(x)),
         "l1_coefficient (self.cfg.l1_coefficient) times the L1 norm of each input's latents, averaged over the batch"),
        ("the whole loss", lambda s, x: s.loss(x)[0],
         "the base class adds the squared error (summed over d_in, averaged over the batch) to your sparsity_loss"),
    ]
    for seed in (1, 2):
        mine, ref, x = _sae_pair(cls, seed)
        for name, fn, hint in steps:
            try:
                got = fn(mine, x)
            except NotImplementedError:
                print(f"✗ reference SAE: {name} is not implemented yet.")
                return False
            except Exception as e:
                print(f"✗ reference SAE: {name} raised {type(e).__name__}: {e}\n  hint: {hint}")
                return False
            msg = first_mismatch(got, fn(ref, x), where=name)
            if msg:
                print(f"✗ reference SAE: {msg}.\n  hint: {hint}")
                return False
        try:
            mine.after_step()
        except NotImplementedError:
            print("✗ reference SAE: after_step is not implemented yet.")
            return False
        ref.after_step()
        msg = first_mismatch(mine.W_dec.detach(), ref.W_dec.detach(), where="W_dec after after_step")
        if msg:
            print(f"✗ reference SAE: {msg}.\n  hint: make each decoder direction (a row of W_dec [d_sae, d_in]) "
                  "unit length, in place, under torch.no_grad()")
            return False
    print("✓ reference SAE: encoder, ReLU, L1 penalty, loss and decoder renormalisation match on 2 test SAEs.")
    return True


def check_keep_top(keep_top: Callable) -> bool:
    """keep_top(values [..., d_sae], k) -> [..., d_sae]: the k largest of each row kept (negatives zeroed)."""
    from mechlib.sae.topk import keep_top as reference

    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(6, 20, generator=g), 3), (torch.randn(2, 5, 40, generator=g), 7),
             (torch.randn(4, 10, generator=g) - 2.0, 4)]  # mostly negative: the ReLU matters
    return run_check("TopK activation", keep_top, reference, cases,
                     hint="values.topk(k, dim=-1) gives the values and indices; scatter the ReLU of the values "
                          "into torch.zeros_like(values) at those indices")


def check_splice_hook(make_hook: Callable) -> bool:
    """make_hook(sae, keep [batch, seq] bool) -> a TransformerLens hook fn(act, hook) that replaces the
    activations at the kept positions by the SAE's reconstruction and leaves the others alone."""
    from mechlib.sae import SAEConfig, TopKSAE

    sae = TopKSAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=4, seed=3))
    g = torch.Generator().manual_seed(3)
    act = torch.randn(2, 6, 8, generator=g)  # [batch, seq, d_in]
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[:, 0] = False  # BOS
    keep[1, 4] = False

    def reference(sae, keep, act):
        out = act.clone()
        out[keep] = sae(act[keep])[0]
        return out

    original = act.clone()

    def learner(sae, keep, act):
        out = make_hook(sae, keep)(act, None)
        if not torch.equal(act, original) and out is not act:
            raise ValueError("the hook changed its input tensor in place and returned another one")
        return out

    return run_check("SAE splice hook", learner, reference, [(sae, keep, act.clone())],
                     hint="copy act (act.clone()), then set out[keep] = sae(act[keep])[0]: the SAE's forward "
                          "returns (reconstruction, latents); positions outside keep (BOS) stay as they were")


# ---------------------------------------------------------------- lesson 04


def _patching_cases(model) -> list[tuple]:
    """(clean tokens, corrupted tokens, metric) for a TransformerLens or an nnsight model, built with the model's
    own tokenizer so that every pair has equal lengths: the Eiffel Tower and a landmark of as many tokens, with
    the normalised logit difference, and a batch of IOI prompts with the raw one (whose baseline isn't 0)."""
    from mechlib.components import component_cache
    from mechlib.patching import logit_diff, normalized
    from mechlib.prompts import answer_ids, fact_pair, ioi_prompts, to_tokens

    cases = []
    for pairs, scaled in [(fact_pair(model, "Eiffel Tower"), True),
                          (ioi_prompts(model, 4, template=3, corruption="s2_io", seed=11), False)]:
        clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
        metric = logit_diff(answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs))
        if scaled:
            logits = [component_cache(model, t, "resid_pre")[0] for t in (clean, corrupted)]
            metric = normalized(metric, *logits)
        cases.append((clean, corrupted, metric))
    return cases


def _with_clean_cache(model) -> list[tuple]:
    """(model, corrupted tokens, clean cache, metric) for the TransformerLens checks."""
    from mechlib.components import run_cache

    return [(model, corrupted, run_cache(model, clean)[1], metric) for clean, corrupted, metric in _patching_cases(model)]


def check_head_patching_loop(loop: Callable, model) -> bool:
    """loop(model, corrupted_tokens, clean_cache, metric) -> [layer, head]: the reference text's per-head loop."""
    from mechlib.patching import head_patching_loop

    return run_check("per-head patching loop", loop, head_patching_loop, _with_clean_cache(model), atol=1e-5,
                     hint="for each layer and head: a hook on blocks.{layer}.attn.hook_z that sets "
                          "activation[:, :, head, :] to the clean cache's, then model.run_with_hooks(corrupted_tokens, "
                          "fwd_hooks=[(name, hook)]) and results[layer, head] = metric(logits).item()")


def check_batched_head_sweep(sweep: Callable, model) -> bool:
    """sweep(model, corrupted_tokens, clean_cache, metric) -> [layer, head], in one batched forward pass."""
    from mechlib.patching import patch_sweep

    def reference(model, corrupted, cache, metric):
        return patch_sweep(model, corrupted, cache, metric, "head_out")

    return run_check("batched head sweep", sweep, reference, _with_clean_cache(model), atol=1e-5,
                     hint="repeat the tokens once per head (tokens.repeat(n_layers * n_heads, 1)); in layer L's hook, "
                          "view the activation as [n_layers * n_heads, batch, pos, head, d_head] and give site "
                          "i = L * n_heads + h its clean head h; then view the logits the same way and apply the "
                          "metric to each site's slice")


def check_attribution_heads(attribute: Callable, model) -> bool:
    """attribute(model, clean_tokens, corrupted_tokens, metric) -> [layer, head]: attribution patching of the
    heads' outputs (denoising), as an estimate of the patched metric."""
    from mechlib.patching import attribution_patch

    def reference(model, clean, corrupted, metric):
        return attribution_patch(model, clean, corrupted, metric, "head_out")

    cases = [(model, clean, corrupted, metric) for clean, corrupted, metric in _patching_cases(model)]
    return run_check("attribution patching of heads", attribute, reference, cases, atol=1e-4,
                     hint="keep each hook_z of the corrupted run with act.retain_grad(), backpropagate the metric, "
                          "then metric(corrupted) + ((clean_z - corrupted_z) * grad).sum over batch, pos and d_head")


# ---------------------------------------------------------------- lesson 05


def check_nnsight_head_patch(patch_head: Callable, model) -> bool:
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
             for (clean, corrupted, _), (layer, head) in zip(_patching_cases(model), [(0, 2), (2, 3)])]
    cases.append((model, cases[0][1], cases[0][2], 3, 2))
    return run_check("head patching in nnsight", learner, reference, cases, atol=1e-4,
                     hint="head h is columns h * d_head to (h + 1) * d_head of transformer.h[layer].attn.c_proj.input; "
                          "in the corrupted invoke read that input first, then assign the clean columns")


def check_nnsight_logit_lens(lens: Callable, model) -> bool:
    """lens(model, tokens, answer) -> [n_layers]: P(answer) at the last position after each block."""
    hf = model._module  # the plain torch model underneath

    def reference(model, tokens, answer):
        with torch.no_grad():
            hidden = hf(tokens, output_hidden_states=True).hidden_states[1:]  # after each block (the last after ln_f)
            outs = [hf.lm_head(hf.transformer.ln_f(h)) for h in hidden[:-1]] + [hf(tokens).logits]
        return torch.stack([o.softmax(-1)[0, -1, answer] for o in outs])

    cases = [(model, clean, int(answer)) for (clean, _, _), answer in
             zip(_patching_cases(model), [model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0], 5])]
    learner = lambda *args: torch.as_tensor(lens(*args)).detach().float()
    return run_check("logit lens in nnsight", learner, reference, cases, atol=1e-4,
                     hint="model.lm_head(model.transformer.ln_f(model.transformer.h[layer].output)) inside the trace, "
                          "then .softmax(-1)[0, -1, answer]")


def check_nnsight_attribution(attribute: Callable, model) -> bool:
    """attribute(model, clean, corrupted, metric) -> [layer, head], as attribution_patch(..., "head_out")."""
    from mechlib.patching import attribution_patch

    def reference(model, clean, corrupted, metric):
        return attribution_patch(model, clean, corrupted, metric, "head_out")

    cases = [(model, clean, corrupted, metric) for clean, corrupted, metric in _patching_cases(model)]
    learner = lambda *args: attribute(*args).detach().cpu()
    return run_check("attribution patching in nnsight", learner, reference, cases, atol=1e-4,
                     hint="save every c_proj input in the corrupted trace, then inside `with value.backward():` save "
                          "their .grad from the last layer to the first; add metric(corrupted) to the sum")


# ---------------------------------------------------------------- lesson 06


def check_add_vector(add_vector: Callable) -> bool:
    """add_vector(vector [d_model], coefficient, positions or None) -> hook(act [batch, pos, d_model], hook)."""
    from mechlib.steering import add_vector as reference

    g = torch.Generator().manual_seed(6)
    act, vector = torch.randn(2, 5, 8, generator=g), torch.randn(8, generator=g)
    cases = [(vector, 3.0, None, act), (vector, -1.5, [4], act), (vector, 0.5, [0, 2], act)]
    original = act.clone()

    def run(make, vector, coefficient, positions, act):
        out = make(vector, coefficient, positions)(act.clone(), None)
        if not torch.equal(act, original):
            raise ValueError("the check's input changed: don't modify the tensors it passes")
        return out

    return run_check("add a steering vector", lambda *c: run(add_vector, *c), lambda *c: run(reference, *c), cases,
                     hint="act[:, positions] += coefficient * vector (all positions when positions is None), on a "
                          "copy of act")


def check_clamp_latent(clamp_latent: Callable) -> bool:
    """clamp_latent(sae, latent, value, positions or None) -> hook that sets one latent to value.

    Checked by what the SAE itself says: at the clamped positions the activation must move by
    sae.decode(z with the latent set to value) - sae.decode(z), and nowhere else, for SAEs of three
    architectures (TopK's decoder is weight-normalised, so a formula using the wrong weights shows)."""
    from mechlib.sae import SAEConfig, make_sae

    saes = [make_sae(SAEConfig(d_in=8, d_sae=32, architecture=arch, k=4, seed=6, threshold_init=0.1)).eval()
            for arch in ("topk", "jumprelu", "standard")]
    g = torch.Generator().manual_seed(7)
    act = torch.randn(2, 5, 8, generator=g) * 2
    cases = [(saes[0], 3, 2.0, None, act), (saes[0], 10, 0.0, [4], act), (saes[1], 0, 5.0, [1, 3], act),
             (saes[2], 7, 1.5, [-1], act)]

    def learner(sae, latent, value, positions, act):
        with torch.no_grad():
            return clamp_latent(sae, latent, value, positions)(act.clone(), None)

    def expected(sae, latent, value, positions, act):
        with torch.no_grad():
            where = list(range(act.shape[1])) if positions is None else list(positions)
            z = sae.encode(act[:, where])  # [batch, n_pos, d_sae]
            z_set = z.clone()
            z_set[..., latent] = value
            out = act.clone()
            out[:, where] += sae.decode(z_set) - sae.decode(z)
            return out

    return run_check("clamp an SAE latent", learner, expected, cases,
                     hint="current = sae.encode(act[:, positions])[..., latent]; add (value - current)[..., None] * "
                          "sae.W_dec[latent] there (W_dec is the decoder the SAE's forward pass uses), so the "
                          "SAE's error term stays")
