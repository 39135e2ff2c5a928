import math

import pytest
import torch

from mechlib.toy_models import (PHASES, ToyConfig, ToyModel, dimensions_per_feature, extra_feature_phase,
                                feature_dimensionality, feature_norms, interference, toy_forward,
                                train_toy_models, weighted_mse)


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


def test_interference_of_known_geometries():
    assert torch.allclose(interference(torch.eye(3)), torch.zeros(3))
    assert torch.allclose(interference(torch.tensor([[1.0, -1.0]])), torch.ones(2))
    assert torch.allclose(interference(_polygon(5)), torch.full((5,), 1.5), atol=1e-5)  # sum_j cos^2 = 5/2, minus itself


def test_forward_and_loss_match_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(3, 2, 5, generator=g), torch.randn(3, 5, generator=g)
    x, imp = torch.rand(4, 3, 5, generator=g), torch.rand(3, 5, generator=g)
    out = toy_forward(W, b, x)
    for i in range(3):
        want = torch.relu(x[:, i] @ W[i].T @ W[i] + b[i])  # [batch, feature]
        assert torch.allclose(out[:, i], want, atol=1e-6)
        assert weighted_mse(x, out, imp)[i].item() == pytest.approx((imp[i] * (x[:, i] - want) ** 2).sum(-1).mean().item(), rel=1e-5)


def test_batch_follows_feature_probability():
    m = ToyModel(ToyConfig(n_features=4, n_hidden=2, n_instances=2), torch.tensor([1.0, 0.1]), torch.ones(4))
    x = m.generate_batch(20000)  # [batch, instance, feature]
    assert x.shape == (20000, 2, 4) and x.min() >= 0 and x.max() <= 1
    present = (x > 0).float().mean(dim=(0, 2))
    assert present[0] > 0.999 and abs(present[1] - 0.1) < 0.01
    values = x[:, 1][x[:, 1] > 0]  # given present, uniform in [0, 1)
    assert abs(values.mean().item() - 0.5) < 0.02 and abs(values.var().item() - 1 / 12) < 0.01


def test_instances_are_independent():
    m = ToyModel(ToyConfig(5, 2, 3), torch.ones(3), torch.ones(5))
    x = m.generate_batch(8)
    loss = m.loss_per_instance(x, m(x))  # [instance]
    grad = torch.autograd.grad(loss[1], m.W)[0]
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0 and grad[1].abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_features_form_a_pentagon(seed):
    """5 features in 2 dimensions at feature probability 0.05: a regular pentagon (Elhage et al. 2022, fig. 2)."""
    m, _ = train_toy_models(5, 2, torch.tensor([0.05]), torch.ones(5), restarts=8, steps=2000, progress=False, seed=seed)
    W = m.W.detach()[0]
    assert (feature_norms(W) > 0.8).all()
    angles = torch.atan2(W[1], W[0]).sort().values
    gaps = torch.rad2deg(torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])))
    assert ((gaps - 72).abs() < 10).all(), gaps
    assert torch.allclose(feature_dimensionality(W), torch.full((5,), 0.4), atol=0.05)


def test_dense_features_get_a_projection_or_the_most_important_two():
    imp = torch.stack([torch.ones(5), 0.7 ** torch.arange(5.0)])
    m, _ = train_toy_models(5, 2, torch.tensor([1.0, 1.0]), imp, restarts=8, steps=2000, progress=False)
    equal, decaying = m.W.detach()
    assert torch.allclose(equal @ equal.T, torch.eye(2), atol=0.05)  # W^T W is an orthogonal projection
    norms = feature_norms(decaying)
    assert (norms[:2] > 0.9).all() and (norms[2:] < 0.5).all()


def test_sparsity_lets_more_features_in():
    """20 features in 5 dimensions, importance 0.7^i: 5 represented when dense, >= 10 at sparsity 0.99."""
    m, _ = train_toy_models(20, 5, torch.tensor([1.0, 0.01]), 0.7 ** torch.arange(20.0), steps=2000, progress=False)
    represented = (feature_norms(m.W.detach()) > 0.5).sum(-1)  # [instance]
    assert represented[0] == 5 and represented[1] >= 10
    d_star = dimensions_per_feature(m.W.detach())
    assert d_star[0] == pytest.approx(1.0, abs=0.05) and d_star[1] < 0.6  # superposition: < 1 dimension a feature


@pytest.mark.slow
def test_restarts_rescue_runs_that_get_stuck():
    """2 features in 1 dimension, sparse: a start with both features on the same side cannot reach superposition."""
    p, imp = torch.full((16,), 0.05), torch.ones(2)
    once, _ = train_toy_models(2, 1, p, imp, restarts=1, steps=1000, progress=False)
    best_of_6, _ = train_toy_models(2, 1, p, imp, restarts=6, steps=1000, progress=False)
    assert (extra_feature_phase(once.W.detach()) != 2).any()
    assert (extra_feature_phase(best_of_6.W.detach()) == 2).all()


def test_restarts_need_one_importance_row_per_configuration():
    with pytest.raises(ValueError, match="one row per configuration"):
        train_toy_models(2, 1, torch.tensor([1.0, 0.1]), torch.ones(3, 2), steps=1, progress=False)


def test_phases_of_two_features_in_one_dimension():
    W = torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]], [[1.0, 0.1]]])  # [4, 1, 2]
    assert [PHASES[i] for i in extra_feature_phase(W).tolist()] == [
        "not represented", "dedicated dimension", "superposition", "not represented"]
    with pytest.raises(ValueError, match="2 features in 1 dimension"):
        extra_feature_phase(torch.zeros(2, 3))


def test_phase_diagram_corners():
    """Dense: the less important extra feature is dropped, the more important one takes the dimension.
    Sparse: both share it."""
    p = torch.tensor([1.0, 1.0, 0.03])
    imp = torch.tensor([[1.0, 0.1], [1.0, 10.0], [1.0, 1.0]])
    m, _ = train_toy_models(2, 1, p, imp, restarts=6, steps=1000, progress=False)
    assert [PHASES[i] for i in extra_feature_phase(m.W.detach()).tolist()] == [
        "not represented", "dedicated dimension", "superposition"]


@pytest.mark.slow
def test_antipodal_pairs_are_sticky():
    """100 features in 10 dimensions: around 1/(1-S) = 3, D* sits at 1/2, the features in antipodal pairs."""
    m, _ = train_toy_models(100, 10, torch.tensor([0.35, 0.28]), torch.ones(100), steps=1500, progress=False)
    W = m.W.detach()
    assert ((dimensions_per_feature(W) - 0.5).abs() < 0.08).all()
    assert (((feature_dimensionality(W) - 0.5).abs() < 0.015).sum(-1) >= 14).all()


# ---------------------------------------------------------------- lesson 02's shipped sweeps
@pytest.mark.slow
@pytest.mark.parametrize("name", ["phase", "dimensionality"])
def test_the_shipped_sweeps_are_what_training_gives(name):
    """Lesson 02 loads these instead of training them (80 s): training here must give the same models."""
    from mechlib.toy_sweeps import toy_sweep, train_sweep

    shipped, trained = toy_sweep(name).W.detach(), train_sweep(name, progress=False).W.detach()
    if name == "phase":  # what the lesson reads: the phase of every configuration
        assert torch.equal(extra_feature_phase(shipped), extra_feature_phase(trained))
    else:  # and the geometry: each feature's dimensionality and the model's dimensions per feature
        assert torch.allclose(feature_dimensionality(shipped), feature_dimensionality(trained), atol=0.02)
        assert torch.allclose(dimensions_per_feature(shipped), dimensions_per_feature(trained), atol=0.01)
    assert torch.allclose(shipped, trained, atol=1e-3)  # the same weights, up to float rounding on other CPUs


def test_a_missing_sweep_says_how_to_get_it(tmp_path):
    from mechlib.toy_sweeps import toy_sweep

    with pytest.raises(FileNotFoundError, match="make toy-models.*TRAIN_HERE"):
        toy_sweep("phase", directory=tmp_path)
    with pytest.raises(ValueError, match="unknown sweep 'phases'"):
        toy_sweep("phases")
