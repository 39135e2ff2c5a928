"""Checks of lesson 03's exercises (sparse autoencoders)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, first_mismatch, run_check, skipped


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


def check_reference_sae(cls: type) -> Checked:
    """cls: a subclass of mechlib.sae.SAE that is the reference text's SAE (pre_activation, activate,
    sparsity_loss, after_step). Compared with mechlib's StandardSAE on the same weights, which later cells
    use instead if the exercise is skipped."""
    from mechlib.sae import StandardSAE

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
                return skipped(f"reference SAE ({name})", StandardSAE)
            except Exception as e:
                print(f"✗ reference SAE: {name} raised {type(e).__name__}: {e}\n  hint: {hint}")
                return Checked(cls, False)
            msg = first_mismatch(got, fn(ref, x), where=name)
            if msg:
                print(f"✗ reference SAE: {msg}.\n  hint: {hint}")
                return Checked(cls, False)
        try:
            mine.after_step()
        except NotImplementedError:
            return skipped("reference SAE (after_step)", StandardSAE)
        ref.after_step()
        msg = first_mismatch(mine.W_dec.detach(), ref.W_dec.detach(), where="W_dec after after_step")
        if msg:
            print(f"✗ reference SAE: {msg}.\n  hint: make each decoder direction (a row of W_dec [d_sae, d_in]) "
                  "unit length, in place, under torch.no_grad()")
            return Checked(cls, False)
    print("✓ reference SAE: encoder, ReLU, L1 penalty, loss and decoder renormalisation match on 2 test SAEs.")
    return Checked(cls, True)


def check_keep_top(keep_top: Callable) -> Checked:
    """keep_top(values [..., d_sae], k) -> [..., d_sae]: the k largest of each row kept (negatives zeroed)."""
    from mechlib.sae.topk import keep_top as reference

    g = torch.Generator().manual_seed(0)
    cases = [(torch.randn(6, 20, generator=g), 3), (torch.randn(2, 5, 40, generator=g), 7),
             (torch.randn(4, 10, generator=g) - 2.0, 4)]  # mostly negative: the ReLU matters
    return run_check("TopK activation", keep_top, reference, cases,
                     hint="values.topk(k, dim=-1) gives the values and indices; scatter the ReLU of the values "
                          "into torch.zeros_like(values) at those indices")


def check_splice_hook(make_hook: Callable) -> Checked:
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

    def splice_hook(sae, keep):  # what later cells use if the exercise is skipped
        return lambda act, hook: reference(sae, keep, act)

    return run_check("SAE splice hook", learner, reference, [(sae, keep, act.clone())], learner=make_hook,
                     fallback=splice_hook,
                     hint="copy act (act.clone()), then set out[keep] = sae(act[keep])[0]: the SAE's forward "
                          "returns (reconstruction, latents); positions outside keep (BOS) stay as they were")
