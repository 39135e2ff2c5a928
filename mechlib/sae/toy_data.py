"""Synthetic activations with known features, to check that an SAE recovers what is there.

Each sample is a sparse sum of ground-truth directions: every feature is active with probability
active / n_features, with a magnitude uniform in [0, 1). The score is the mean max cosine similarity
(MMCS): for each true feature, the best-aligned decoder direction, averaged over features.
"""

from __future__ import annotations

import torch


class SparseFeatureData:
    """Batches [batch_size, d] of sparse combinations of n_features random unit directions in d dims."""

    def __init__(self, n_features: int = 512, d: int = 256, active: float = 5.0, batch_size: int = 4096, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        # one draw first: an SAE with the same seed and d_sae = n_features would otherwise start with
        # exactly these directions as its decoder (SAE init draws randn(d_sae, d_in) from the same seed)
        torch.rand(1, generator=self.generator)
        features = torch.randn(n_features, d, generator=self.generator)
        self.features = features / features.norm(dim=-1, keepdim=True)  # [n_features, d]
        self.p, self.batch_size = active / n_features, batch_size

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(coefficients [batch, n_features], activations [batch, d])."""
        n = self.features.shape[0]
        present = torch.rand(self.batch_size, n, generator=self.generator) < self.p
        coefficients = present * torch.rand(self.batch_size, n, generator=self.generator)
        return coefficients, coefficients @ self.features

    def next_batch(self) -> torch.Tensor:
        return self.sample()[1]  # [batch, d]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def mean_max_cosine(decoder: torch.Tensor, features: torch.Tensor) -> float:
    """MMCS of decoder directions [d_sae, d] against true features [n_features, d]."""
    dec = decoder / decoder.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return float((features @ dec.T).max(dim=-1).values.mean())


def recover_known_features(architecture: str = "topk", steps: int = 600, k: int = 5, seed: int = 0, lr: float = 3e-3,
                           progress: bool = True) -> dict[str, float]:
    """Train an SAE (d_sae = n_features = 512, k = the true number active) on SparseFeatureData and
    score it: MMCS against the true features, before and after training, and L0 and FVU on fresh data."""
    from mechlib.sae import SAEConfig, Trainer, TrainConfig, fvu, l0, make_sae

    data = SparseFeatureData(n_features=512, d=256, active=5, batch_size=2048, seed=seed)
    sae = make_sae(SAEConfig(d_in=256, d_sae=512, architecture=architecture, k=k, seed=seed))
    before = mean_max_cosine(sae.W_dec.detach(), data.features)
    Trainer(sae, data, TrainConfig(steps=steps, lr=lr, dead_after=50, seed=seed)).run(progress=progress)
    held = torch.cat([data.next_batch() for _ in range(4)])  # [8192, 256]
    with torch.no_grad():
        x_hat, z = sae.eval()(held)
    return {"MMCS before": before, "MMCS": mean_max_cosine(sae.W_dec.detach(), data.features),
            "L0": float(l0(z)), "FVU": float(fvu(held, x_hat))}
