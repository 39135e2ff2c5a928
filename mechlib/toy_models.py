"""Toy models of superposition (Elhage et al. 2022): x' = ReLU(W^T W x + b).

Many instances train at once as one batched tensor, each with its own feature probability and
importance, so a whole sweep (a phase diagram, a sparsity series) is one training run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class ToyConfig:
    n_features: int = 5
    n_hidden: int = 2
    n_instances: int = 8


class ToyModel(torch.nn.Module):
    """n_instances independent models, each mapping n_features -> n_hidden -> n_features."""

    def __init__(self, cfg: ToyConfig, feature_probability: torch.Tensor, importance: torch.Tensor,
                 seed: int = 0):
        """feature_probability: [instance] or [instance, feature]; importance: [feature] or [instance, feature]."""
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        w = torch.empty(cfg.n_instances, cfg.n_hidden, cfg.n_features)
        bound = (6 / (cfg.n_hidden + cfg.n_features)) ** 0.5  # xavier-uniform, as in the paper's code
        self.W = torch.nn.Parameter(w.uniform_(-bound, bound, generator=g))  # [instance, hidden, feature]
        self.b_final = torch.nn.Parameter(torch.zeros(cfg.n_instances, cfg.n_features))  # [instance, feature]
        shape = (cfg.n_instances, cfg.n_features)
        p = torch.as_tensor(feature_probability, dtype=torch.float)
        p = p[:, None] if p.dim() == 1 else p  # one probability per instance, or [instance, feature]
        self.register_buffer("feature_probability", p.expand(shape).clone())
        imp = torch.as_tensor(importance, dtype=torch.float)  # [feature] or [instance, feature]
        self.register_buffer("importance", imp.expand(shape).clone())
        self.generator = torch.Generator().manual_seed(seed + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, instance, feature] -> reconstruction [batch, instance, feature]."""
        return toy_forward(self.W, self.b_final, x)

    def generate_batch(self, batch_size: int) -> torch.Tensor:
        """Each feature present with its probability, uniform in [0, 1] when present.  # [batch, instance, feature]"""
        shape = (batch_size, self.cfg.n_instances, self.cfg.n_features)
        u = torch.rand(shape, generator=self.generator).to(self.feature_probability.device)  # drawn on the CPU generator
        # one draw does both: u < p with probability p, and given that, u / p is uniform in [0, 1)
        return (u < self.feature_probability) * (u / self.feature_probability)

    def loss_per_instance(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Importance-weighted squared error, averaged over the batch.  # [instance]"""
        return weighted_mse(x, out, self.importance)


def toy_forward(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x' = ReLU(W^T W x + b) for every instance at once.

    W [instance, hidden, feature], b [instance, feature], x [batch, instance, feature] -> [batch, instance, feature]
    """
    hidden = torch.einsum("ihf,bif->bih", W, x)  # [batch, instance, hidden]
    out = torch.einsum("ihf,bih->bif", W, hidden)  # [batch, instance, feature]
    return torch.relu(out + b)


def weighted_mse(x: torch.Tensor, out: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """sum_i I_i (x_i - x'_i)^2, averaged over the batch. x, out [batch, instance, feature],
    importance [instance, feature] -> [instance]"""
    return (importance * (x - out) ** 2).sum(-1).mean(0)


def train_toy_model(model: ToyModel, steps: int = 5000, batch_size: int = 1024, lr: float = 1e-3,
                    progress: bool = True, eval_size: int = 65536) -> torch.Tensor:
    """The paper's recipe (AdamW, lr 1e-3, batch 1024). Returns the final loss per instance [instance].

    The final loss is measured on eval_size fresh samples: one batch is too noisy to tell which of
    several restarts found the better solution when features are sparse.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in tqdm(range(steps), desc="toy models", disable=not progress, mininterval=1):
        x = model.generate_batch(batch_size)
        loss = model.loss_per_instance(x, model(x))  # [instance]
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # instances are independent: summing trains each on its own loss
        opt.step()
    with torch.no_grad():
        x = model.generate_batch(eval_size)
        return model.loss_per_instance(x, model(x))


def train_toy_models(n_features: int, n_hidden: int, feature_probability: torch.Tensor, importance: torch.Tensor,
                     restarts: int = 1, steps: int = 5000, batch_size: int = 1024, lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> tuple[ToyModel, torch.Tensor]:
    """One toy model per configuration, trained `restarts` times; keep the restart with the lowest loss.

    feature_probability: [config] or [config, feature]; importance: [feature] or [config, feature].
    Returns a ToyModel with one instance per configuration, and its loss [config]. All restarts train
    at once as instances of one batched model (restart r of configuration c is instance r * configs + c).
    """
    p = torch.as_tensor(feature_probability, dtype=torch.float)
    imp = torch.as_tensor(importance, dtype=torch.float)
    n_configs = p.shape[0]
    if imp.dim() == 2 and imp.shape[0] != n_configs:
        raise ValueError(f"importance has {imp.shape[0]} rows but there are {n_configs} configurations "
                         f"(feature_probability has {n_configs}): give one row per configuration, or a [feature] vector")
    repeat = (restarts,) + (1,) * (p.dim() - 1)
    model = ToyModel(ToyConfig(n_features, n_hidden, restarts * n_configs), p.repeat(repeat),
                     imp.repeat(restarts, 1) if imp.dim() == 2 else imp, seed=seed)
    loss = train_toy_model(model, steps, batch_size, lr, progress).view(restarts, n_configs)
    best = loss.argmin(0)  # [config]: the restart to keep
    pick = best * n_configs + torch.arange(n_configs)  # [config]: its instance
    kept = ToyModel(ToyConfig(n_features, n_hidden, n_configs), p, imp, seed=seed)
    with torch.no_grad():
        kept.W.copy_(model.W[pick])
        kept.b_final.copy_(model.b_final[pick])
    return kept, loss.min(0).values


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i|| for each feature's direction in the hidden space. W [..., hidden, feature] -> [..., feature]."""
    return W.norm(dim=-2)


def _squared_overlaps(W: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """(W_i_hat . W_j)^2 for every pair of features. W [..., hidden, feature] -> [..., feature, feature]"""
    unit = W / (feature_norms(W)[..., None, :] + eps)  # [..., hidden, feature]
    return torch.einsum("...hi,...hj->...ij", unit, W) ** 2


def feature_dimensionality(W: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2: the share of a hidden dimension feature i gets.

    W [..., hidden, feature] -> [..., feature]. 1 for a feature with a dimension of its own, 1/2 for
    an antipodal pair, 2/5 for a pentagon, 0 for a feature that is not represented.
    """
    return feature_norms(W) ** 2 / (_squared_overlaps(W, eps).sum(-1) + eps)


def dimensions_per_feature(W: torch.Tensor) -> torch.Tensor:
    """D* = m / ||W||_F^2: hidden dimensions per (fully) represented feature.  W [..., hidden, feature] -> [...]"""
    return W.shape[-2] / W.pow(2).sum(dim=(-2, -1))


def interference(W: torch.Tensor) -> torch.Tensor:
    """sum_{j != i} (W_i_hat . W_j)^2: how much of other features lies along feature i's direction.

    0 when feature i has a direction of its own (the paper colours such features black). W [..., hidden, feature] -> [..., feature]
    """
    overlaps = _squared_overlaps(W)  # [..., feature, feature]
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)


PHASES = ("not represented", "dedicated dimension", "superposition")


def extra_feature_phase(W: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The phase of feature 1 in a model of 2 features in 1 dimension, as in the paper's phase diagrams.

    W [..., 1, 2] -> [...] indices into PHASES: 0 if feature 1 is not represented (norm < threshold),
    1 if it has the dimension to itself (feature 0 is not represented), 2 if both share it.
    """
    if W.shape[-2:] != (1, 2):
        raise ValueError(f"the phase diagram is for 2 features in 1 dimension: W should be [..., 1, 2], got {tuple(W.shape)}")
    represented = feature_norms(W) > threshold  # [..., 2]
    return torch.where(~represented[..., 1], 0, torch.where(~represented[..., 0], 1, 2))
