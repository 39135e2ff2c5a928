"""What every sparse autoencoder shares: the weights (in sae-lens's layout), decode, forward, and
the metrics the trainer and the lessons report. Each architecture is a small subclass in its own file
that says how to encode and what its sparsity loss is."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class SAEConfig:
    d_in: int
    d_sae: int
    architecture: str = "standard"
    l1_coefficient: float = 1.0  # standard: weight of the L1 penalty on latent activations
    seed: int = 0
    metadata: dict = field(default_factory=dict)  # model_name, hook_name, ... (saved with the weights)

    def to_dict(self) -> dict:
        return asdict(self)


class SAE(torch.nn.Module):
    """x [batch, d_in] -> latents [batch, d_sae] -> reconstruction [batch, d_in]."""

    architecture = ""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)  # unit-norm decoder directions
        self.W_dec = torch.nn.Parameter(w_dec)  # [d_sae, d_in]
        self.W_enc = torch.nn.Parameter(w_dec.T.clone())  # [d_in, d_sae]: the encoder starts as the decoder's transpose
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))  # [d_sae]
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_in))  # [d_in]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, d_in] -> latent activations [batch, d_sae]."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents [batch, d_sae] -> reconstruction [batch, d_in]."""
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def sparsity_loss(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(())

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction error (squared, summed over d_in) plus the architecture's sparsity term,
        both averaged over the batch. Returns the loss and its parts, with the latents."""
        x_hat, z = self(x)
        mse = (x_hat - x).pow(2).sum(-1).mean()
        sparsity = self.sparsity_loss(z)
        return mse + sparsity, {"mse": mse, "sparsity": sparsity, "x_hat": x_hat, "z": z}

    @torch.no_grad()
    def after_step(self) -> None:
        """Called after each optimiser step: constraints on the weights (unit-norm decoder, ...)."""


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: ||x - x_hat||^2 / ||x - mean(x)||^2 over the batch."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def l0(z: torch.Tensor) -> torch.Tensor:
    """Mean number of active latents per input."""
    return (z > 0).float().sum(-1).mean()
