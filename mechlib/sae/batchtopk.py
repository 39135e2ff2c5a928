"""BatchTopK SAE (Bussmann et al. 2024): keep the k x batch largest activations of the whole batch, so
inputs that need more latents get more. At inference a global threshold, the moving average of the
smallest activation kept in training, replaces the batch: the SAE becomes a JumpReLU, and is saved as one."""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE
from mechlib.sae.topk import auxk_loss


class BatchTopKSAE(SAE):
    architecture = "batchtopk"
    saved_architecture = "jumprelu"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))  # the global inference threshold

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        acts = torch.relu(pre)
        if not self.training:
            return acts * (acts > self.threshold)
        flat = acts.flatten()
        top = flat.topk(min(self.cfg.k * acts.shape[0], flat.numel()))
        z = torch.zeros_like(flat).scatter(-1, top.indices, top.values).view_as(acts)
        with torch.no_grad():
            kept = top.values[top.values > 0]
            if kept.numel():
                lr = self.cfg.threshold_lr
                self.threshold.mul_(1 - lr).add_(lr * kept.min())
        return z

    def aux_loss(self, x, x_hat, pre, dead):
        return auxk_loss(self, x, x_hat, pre, dead, self.cfg.aux_k_coefficient)

    @torch.no_grad()
    def after_step(self) -> None:
        self.normalise_decoder()

    def inference_threshold(self) -> torch.Tensor:
        return self.threshold.expand(self.cfg.d_sae).clone()
