"""The reference text's SAE: ReLU latents, an L1 penalty, the input centred by the decoder bias, and
decoder directions renormalised to unit length after every step (so the L1 penalty cannot be
dodged by shrinking latents and growing decoder directions)."""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE


class StandardSAE(SAE):
    architecture = "standard"
    saved_architecture = "standard"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return self.cfg.l1_coefficient * z.sum() / len(z)  # z >= 0 after the ReLU: its L1 norm is its sum

    @torch.no_grad()
    def after_step(self) -> None:
        self.normalise_decoder()
