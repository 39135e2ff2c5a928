"""Checks of lesson 02's exercises (superposition)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, run_check


def _toy_cases(seed: int, n_features: int = 5, n_hidden: int = 2, n_instances: int = 3, batch: int = 16):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_instances, n_hidden, n_features, generator=g)  # [instance, hidden, feature]
    b = torch.randn(n_instances, n_features, generator=g)  # [instance, feature]
    x = torch.rand(batch, n_instances, n_features, generator=g) * (torch.rand(batch, n_instances, n_features, generator=g) < 0.3)
    return W, b, x


def check_toy_forward(forward: Callable) -> Checked:
    """forward(W [instance, hidden, feature], b [instance, feature], x [batch, instance, feature]) -> [batch, instance, feature]."""
    from mechlib.toy_models import toy_forward

    cases = [_toy_cases(1), _toy_cases(2, n_features=7, n_hidden=3, n_instances=2)]
    return run_check("toy model forward pass", forward, toy_forward, cases,
                     hint="hidden = W x for each instance (torch.einsum('ihf,bif->bih', W, x)), then W^T hidden, "
                          "then + b and ReLU")


def check_weighted_loss(loss: Callable) -> Checked:
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


def check_feature_dimensionality(dimensionality: Callable) -> Checked:
    """dimensionality(W [instance, hidden, feature]) -> [instance, feature], as toy_models.feature_dimensionality."""
    from mechlib.toy_models import feature_dimensionality

    W, _, _ = _toy_cases(3, n_features=6, n_hidden=3)
    W[1, :, 2] = 0.0  # a feature that is not represented: dimensionality 0, not NaN
    return run_check("feature dimensionality", dimensionality, lambda w: feature_dimensionality(w), [(W,)],
                     hint="D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 with W_i the column of feature i; divide "
                          "by the norm plus a small epsilon so that a zero column gives 0, not NaN", atol=1e-4)
