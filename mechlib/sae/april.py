"""Anthropic's April 2024 update to the standard SAE: the L1 penalty weights each latent by the norm of
its decoder direction, so the decoder needs no unit-norm constraint, and the input is not centred by
the decoder bias. sae-lens calls it "standard" too (with apply_b_dec_to_input false)."""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE


class AprilSAE(SAE):
    architecture = "april"
    saved_architecture = "standard"
    apply_b_dec_to_input = False

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return self.cfg.l1_coefficient * (z * self.W_dec.norm(dim=-1)).sum(-1).mean()
