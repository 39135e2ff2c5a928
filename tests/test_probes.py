"""mechlib.probes: linear probes, Hewitt & Liang's control task and selectivity, on data with a known answer."""

import pytest
import torch

from mechlib.probes import control_labels, probe_report, train_probe


def _rows(n_types: int, rows_per_type: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """types [n], each type's task label (3 classes, a fixed function of the type) [n], a random row split [n]."""
    g = torch.Generator().manual_seed(seed)
    types = torch.arange(n_types).repeat_interleave(rows_per_type)
    labels = torch.randint(3, (n_types,), generator=g)[types]
    train = torch.rand(len(types), generator=g) < 0.7
    return types, labels, train


def test_a_probe_decodes_a_linearly_encoded_label_and_nothing_from_noise():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(4, (800,), generator=g)
    x = torch.nn.functional.one_hot(labels, 16).float() * 4 + torch.randn(800, 16, generator=g)  # [n, d_in]; Bayes ~99%
    probe = train_probe(x[:600], labels[:600])
    assert probe.accuracy(x[600:], labels[600:]) > 0.95
    unrelated = train_probe(torch.randn(800, 16, generator=g)[:600], labels[:600])
    assert unrelated.accuracy(torch.randn(200, 16, generator=g), labels[600:]) < 0.25 + 0.1  # chance is 1/4


def test_a_probe_trains_inside_no_grad_as_lessons_run_it():
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(2, (200,), generator=g)
    x = torch.nn.functional.one_hot(labels, 8).float() * 4 + torch.randn(200, 8, generator=g)  # [n, d_in]
    with torch.no_grad():
        probe = train_probe(x, labels)
    assert probe.accuracy(x, labels) > 0.95


def test_control_labels_are_fixed_per_type_and_drawn_from_the_task_labels():
    types = torch.arange(2000).repeat_interleave(3)
    labels = (torch.arange(6000) % 10 == 0).long()  # 10% ones
    control = control_labels(types, labels, seed=3)
    assert (control.view(2000, 3) == control.view(2000, 3)[:, :1]).all()  # one label per type, wherever it occurs
    assert 0.07 < control.float().mean() < 0.13  # the task's label distribution
    assert torch.equal(control, control_labels(types, labels, seed=3))
    assert not torch.equal(control, control_labels(types, labels, seed=4))


def test_selectivity_is_low_when_the_probe_can_memorise_types_and_high_when_it_must_read_the_label():
    types, labels, train = _rows(n_types=40, rows_per_type=10)
    g = torch.Generator().manual_seed(2)
    # identity: each type has its own random direction in 64 dims, so any labelling of types is linear
    identity = torch.randn(40, 64, generator=g)[types] + 0.1 * torch.randn(len(types), 64, generator=g)
    memorised = probe_report(identity, labels, types, train)
    assert memorised.accuracy > 0.95 and memorised.control_accuracy > 0.9 and memorised.selectivity < 0.1
    # label only: the representation carries the label in 4 dims and nothing else about the type
    label_only = torch.nn.functional.one_hot(labels, 4).float() * 2 + 0.3 * torch.randn(len(types), 4, generator=g)
    reads = probe_report(label_only, labels, types, train)
    assert reads.accuracy > 0.95 and reads.control_accuracy < 0.6 and reads.selectivity > 0.35
    assert reads.majority < 0.6 and reads.train_accuracy > 0.95


def test_the_probe_direction_raises_its_label_in_activation_space():
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(3, (300,), generator=g)
    x = 10 * torch.nn.functional.one_hot(labels, 8).float() + torch.randn(300, 8, generator=g) * torch.arange(1, 9)
    probe = train_probe(x, labels)
    d = probe.direction(2)
    assert d.norm().item() == pytest.approx(1.0)
    with torch.no_grad():
        before, after = probe(x)[:, 2], probe(x + 5 * d)[:, 2]
    assert (after > before).all()


def test_probe_errors_say_what_is_wrong():
    x, labels = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="one label per row"):
        train_probe(x, labels[:9])
    with pytest.raises(ValueError, match="rows on both sides"):
        probe_report(x, labels, labels, torch.ones(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="one type per label"):
        control_labels(labels[:5], labels)


def test_removing_the_probe_subspace_leaves_nothing_to_separate_the_classes():
    from mechlib.probes import probe_subspace, project_out

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(3, (600,), generator=g)
    means = torch.randn(3, 12, generator=g) * 3
    x = means[labels] + torch.randn(600, 12, generator=g)  # [n, d_in]
    probe = train_probe(x, labels)
    basis = probe_subspace(probe)  # [2, 12]
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)
    removed = project_out(basis)(x[None].clone())[0]  # [n, d_in]
    assert probe.accuracy(x, labels) > 0.95 and probe.accuracy(removed, labels) < 0.6
    positions = torch.zeros(1, dtype=torch.long)
    one = project_out(basis, positions)(x[None, :5].clone())[0]  # only position 0 of the one row changes
    assert torch.allclose(one[0], removed[0], atol=1e-5) and torch.equal(one[1:], x[1:5])
