"""Linear probes: is a label linearly decodable from a model's activations, and is the probe only memorising?

A probe is multinomial logistic regression from one hook's activation [d_in] to a label: the field's first test
of "is this information in there?". Held-out accuracy says the label is *decodable* at that hook; it does not
say the model *uses* it there (steer or ablate along the probe's direction to test that).

A probe that is expressive enough can learn any mapping from the input word's identity, whatever the model
represents. Hewitt & Liang (2019) therefore train the same probe on a *control task*: every word type gets a
label drawn at random (from the task's label distribution) and keeps it wherever it occurs, so only memorising
types can solve it. A probe's *selectivity* is its task accuracy minus its control accuracy, on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class LinearProbe(torch.nn.Module):
    """logits = ((x - mean) / std) W + b: standardising lets one learning rate suit every hook's scale."""

    def __init__(self, d_in: int, n_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.linear = torch.nn.Linear(d_in, n_classes)
        self.register_buffer("mean", mean)  # [d_in]
        self.register_buffer("std", std)  # [d_in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d_in] -> logits [n, n_classes]"""
        return self.linear((x - self.mean) / self.std)

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            return (self(x).argmax(-1) == labels.to(x.device)).float().mean().item()

    @property
    def logit_directions(self) -> torch.Tensor:
        """d logit / d x for every class, in activation space (the standardisation folded in).  # [n_classes, d_in]"""
        return self.linear.weight.detach() / self.std

    def direction(self, label: int) -> torch.Tensor:
        """The activation-space direction that raises `label`'s logit, unit length: what to steer or ablate
        along to test whether the model uses what the probe reads.  # [d_in]"""
        w = self.logit_directions[label]
        return w / w.norm()


def _check(x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.ndim != 2 or labels.shape != (len(x),):
        raise ValueError(f"a probe takes activations [n, d_in] and one label per row [n]; got {tuple(x.shape)} "
                         f"and {tuple(labels.shape)}")


def train_probe(x: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None, steps: int = 300,
                lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> LinearProbe:
    """A linear probe trained full-batch with Adam on the cross-entropy of labels [n] given activations [n, d_in]."""
    _check(x, labels)
    x, labels = x.detach().float(), labels.long().to(x.device)
    n_classes = n_classes or int(labels.max()) + 1
    torch.manual_seed(seed)
    probe = LinearProbe(x.shape[1], n_classes, x.mean(0), x.std(0).clamp(min=1e-6)).to(x.device)
    opt = torch.optim.Adam(probe.linear.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():  # also inside a lesson's torch.no_grad()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(probe(x), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probe


def control_labels(types: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Hewitt & Liang's control task: each distinct value of types [n] (a word type, a landmark) gets one label
    drawn from the empirical distribution of labels [n], and keeps it at every occurrence.  # [n]"""
    if types.shape != labels.shape:
        raise ValueError(f"one type per label: types {tuple(types.shape)}, labels {tuple(labels.shape)}")
    g = torch.Generator().manual_seed(seed)
    distinct, index = types.cpu().unique(return_inverse=True)  # index [n]: each row's type
    drawn = labels.cpu()[torch.randint(len(labels), (len(distinct),), generator=g)]  # [n_types]
    return drawn[index].to(labels.device)


@dataclass
class ProbeReport:
    """Held-out accuracies of a probe on the task and on its control task, and the baselines to read them by."""

    accuracy: float  # task, held out
    train_accuracy: float
    control_accuracy: float  # control task, held out
    majority: float  # always answering the most frequent training label, held out
    probe: LinearProbe

    @property
    def selectivity(self) -> float:
        return self.accuracy - self.control_accuracy


def probe_report(x: torch.Tensor, labels: torch.Tensor, types: torch.Tensor, train: torch.Tensor,
                 seed: int = 0, **train_kwargs) -> ProbeReport:
    """Train a probe and its control-task twin on the rows where train [n] (bool) is True, and score both on the
    others. types [n]: what the control task assigns labels to (e.g. the token id of the probed position)."""
    _check(x, labels)
    if train.dtype != torch.bool or train.shape != labels.shape or train.all() or not train.any():
        raise ValueError("train must be a bool mask [n] with rows on both sides: the probe is scored on held-out rows")
    labels, types, train = labels.to(x.device), types.to(x.device), train.to(x.device)  # [n] each, on x's device
    n_classes = int(labels.max()) + 1
    held = ~train
    probe = train_probe(x[train], labels[train], n_classes, seed=seed, **train_kwargs)
    control = control_labels(types, labels, seed)
    control_probe = train_probe(x[train], control[train], n_classes, seed=seed, **train_kwargs)
    majority = labels[train].bincount(minlength=n_classes).argmax()
    return ProbeReport(accuracy=probe.accuracy(x[held], labels[held]),
                       train_accuracy=probe.accuracy(x[train], labels[train]),
                       control_accuracy=control_probe.accuracy(x[held], control[held]),
                       majority=(labels[held] == majority).float().mean().item(), probe=probe)


# ------------------------------------------------------------------ is what the probe reads used?


def probe_subspace(probe: LinearProbe, classes: torch.Tensor | None = None) -> torch.Tensor:
    """An orthonormal basis of the directions along which the probe tells `classes` (default: all) apart: the
    span of their logit directions minus their mean, rank n_classes - 1. Removing it leaves the probe nothing
    to separate those classes by.  # [n_classes - 1, d_in]"""
    w = probe.logit_directions  # [n_classes, d_in]
    if classes is not None:
        w = w[classes]
    w = w - w.mean(0)  # only differences between the classes' logits matter to the argmax
    return torch.linalg.svd(w, full_matrices=False).Vh[:len(w) - 1]


def project_out(basis: torch.Tensor, positions: torch.Tensor | None = None):
    """A TransformerLens hook that removes the span of basis [k, d_model] (orthonormal rows) from the activation
    [batch, pos, d_model] at one position per row (positions [batch]), or everywhere if None: the causal test of
    a probe (as in amnesic probing, Elazar et al. 2021): does the model's output change without it?"""

    def hook(act: torch.Tensor, hook=None) -> torch.Tensor:  # act [batch, pos, d_model]
        b = basis.to(act.device, act.dtype)
        act = act.clone()
        if positions is None:
            return act - (act @ b.T) @ b
        rows, pos = torch.arange(len(act), device=act.device), positions.to(act.device)
        x = act[rows, pos]  # [batch, d_model]
        act[rows, pos] = x - (x @ b.T) @ b
        return act

    return hook
