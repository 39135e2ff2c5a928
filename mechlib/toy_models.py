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
        hidden = torch.einsum("ihf,bif->bih", self.W, x)  # [batch, instance, hidden]
        out = torch.einsum("ihf,bih->bif", self.W, hidden)  # [batch, instance, feature]
        return torch.relu(out + self.b_final)

    def generate_batch(self, batch_size: int) -> torch.Tensor:
        """Each feature present with its probability, uniform in [0, 1] when present.  # [batch, instance, feature]"""
        shape = (batch_size, self.cfg.n_instances, self.cfg.n_features)
        values = torch.rand(shape, generator=self.generator)
        present = torch.rand(shape, generator=self.generator) < self.feature_probability
        return values * present

    def loss_per_instance(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Importance-weighted squared error, averaged over the batch.  # [instance]"""
        return (self.importance * (x - out) ** 2).sum(-1).mean(0)


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


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i|| for each feature's direction in the hidden space. W [..., hidden, feature] -> [..., feature]."""
    return W.norm(dim=-2)


def feature_dimensionality(W: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2: the share of a hidden dimension feature i gets.

    W [..., hidden, feature] -> [..., feature]. 1 for a feature with a dimension of its own, 1/2 for
    an antipodal pair, 2/5 for a pentagon, 0 for a feature that is not represented.
    """
    norms = feature_norms(W)  # [..., feature]
    unit = W / (norms[..., None, :] + eps)  # [..., hidden, feature]
    overlaps = torch.einsum("...hi,...hj->...ij", unit, W) ** 2  # [..., feature, feature]
    return norms**2 / (overlaps.sum(-1) + eps)


def dimensions_per_feature(W: torch.Tensor) -> torch.Tensor:
    """D* = m / ||W||_F^2: hidden dimensions per (fully) represented feature.  W [..., hidden, feature] -> [...]"""
    return W.shape[-2] / W.pow(2).sum(dim=(-2, -1))
