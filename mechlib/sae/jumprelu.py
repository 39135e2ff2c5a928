"""JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope): a latent is active only above its own learned
threshold, z = pre * H(pre - threshold), and the penalty is the number of active latents (L0). Neither
has a useful gradient, so training uses straight-through estimators: a window of width `bandwidth`
around the threshold stands in for the step's derivative."""

from __future__ import annotations

import math

import torch

from mechlib.sae.base import SAE


def _window(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / bw) * _window((pre - threshold) / bw) * grad
        return grad_pre, grad_threshold.sum(0) if grad_threshold.dim() > 1 else grad_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_threshold = -(1.0 / bw) * _window((pre - threshold) / bw) * grad
        return torch.zeros_like(pre), grad_threshold.sum(0) if grad_threshold.dim() > 1 else grad_threshold, None


class JumpReLUSAE(SAE):
    architecture = "jumprelu"
    saved_architecture = "jumprelu"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.log_threshold = torch.nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.threshold_init)))  # [d_sae]

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        flat = pre.reshape(-1, pre.shape[-1])
        return _JumpReLU.apply(flat, self.threshold, self.cfg.bandwidth).view_as(pre)

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        l0 = _Step.apply(pre.reshape(-1, pre.shape[-1]), self.threshold, self.cfg.bandwidth).sum(-1).mean()
        return self.cfg.l0_coefficient * l0

    @torch.no_grad()
    def after_step(self) -> None:
        self.normalise_decoder()

    def inference_threshold(self) -> torch.Tensor:
        return self.threshold.detach().clone()
