import math

import pytest
import torch

from mechlib.toy_models import (ToyConfig, ToyModel, dimensions_per_feature, feature_dimensionality, feature_norms,
                                train_toy_model)


def _polygon(k: int) -> torch.Tensor:
    """k unit vectors evenly spaced in 2-D.  # [hidden=2, feature=k]"""
    angles = torch.arange(k) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()])


def test_dimensionality_of_known_geometries():
    assert torch.allclose(feature_dimensionality(torch.eye(2)), torch.ones(2))  # dedicated dimensions
    assert torch.allclose(feature_dimensionality(torch.tensor([[1.0, -1.0]])), torch.full((2,), 0.5))  # antipodal pair
    assert torch.allclose(feature_dimensionality(_polygon(5)), torch.full((5,), 0.4), atol=1e-5)  # pentagon: 2/5
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # the third feature is not represented
    assert torch.allclose(feature_dimensionality(w), torch.tensor([1.0, 1.0, 0.0]))
    assert dimensions_per_feature(_polygon(5)).item() == pytest.approx(0.4)
    assert torch.allclose(feature_norms(_polygon(5)), torch.ones(5))


def test_batch_follows_feature_probability():
    m = ToyModel(ToyConfig(n_features=4, n_hidden=2, n_instances=2), torch.tensor([1.0, 0.1]), torch.ones(4))
    x = m.generate_batch(20000)  # [batch, instance, feature]
    assert x.shape == (20000, 2, 4) and x.min() >= 0 and x.max() <= 1
    present = (x > 0).float().mean(dim=(0, 2))
    assert present[0] > 0.999 and abs(present[1] - 0.1) < 0.01


def test_instances_are_independent():
    m = ToyModel(ToyConfig(5, 2, 3), torch.ones(3), torch.ones(5))
    x = m.generate_batch(8)
    loss = m.loss_per_instance(x, m(x))  # [instance]
    grad = torch.autograd.grad(loss[1], m.W)[0]
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0 and grad[1].abs().sum() > 0


def test_sparse_features_form_a_pentagon():
    """5 features in 2 dimensions at feature probability 0.05: a regular pentagon (Elhage et al. 2022, fig. 2)."""
    torch.manual_seed(0)
    m = ToyModel(ToyConfig(5, 2, 4), torch.full((4,), 0.05), torch.ones(5), seed=0)
    loss = train_toy_model(m, steps=3000, progress=False)
    W = m.W.detach()[loss.argmin()]  # the best of 4 restarts: m = 2 is known to get stuck sometimes
    assert (feature_norms(W) > 0.8).all()
    angles = torch.atan2(W[1], W[0]).sort().values
    gaps = torch.rad2deg(torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])))
    assert ((gaps - 72).abs() < 10).all(), gaps
    assert torch.allclose(feature_dimensionality(W), torch.full((5,), 0.4), atol=0.05)


def test_sparsity_lets_more_features_in():
    """20 features in 5 dimensions, importance 0.7^i: 5 represented when dense, >= 10 at sparsity 0.99."""
    m = ToyModel(ToyConfig(20, 5, 2), torch.tensor([1.0, 0.01]), 0.7 ** torch.arange(20.0), seed=0)
    train_toy_model(m, steps=3000, progress=False)
    represented = (feature_norms(m.W.detach()) > 0.5).sum(-1)  # [instance]
    assert represented[0] == 5 and represented[1] >= 10
    d_star = dimensions_per_feature(m.W.detach())
    assert d_star[0] == pytest.approx(1.0, abs=0.05) and d_star[1] < 0.6  # superposition: < 1 dimension a feature
