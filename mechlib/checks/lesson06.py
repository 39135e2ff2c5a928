"""Checks of lesson 06's exercises (applications)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, run_check


def check_add_vector(add_vector: Callable) -> Checked:
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
                     learner=add_vector, fallback=reference,
                     hint="act[:, positions] += coefficient * vector (all positions when positions is None), on a "
                          "copy of act")


def check_clamp_latent(clamp_latent: Callable) -> Checked:
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

    from mechlib.steering import clamp_latent as reference

    return run_check("clamp an SAE latent", learner, expected, cases, learner=clamp_latent, fallback=reference,
                     hint="current = sae.encode(act[:, positions])[..., latent]; add (value - current)[..., None] * "
                          "sae.W_dec[latent] there (W_dec is the decoder the SAE's forward pass uses), so the "
                          "SAE's error term stays")
