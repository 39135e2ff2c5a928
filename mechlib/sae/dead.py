"""Dead latents, and two of the reference text's three remedies for them (the third, TopK with the
AuxK loss, is an architecture: topk.py).

- Resampling (Anthropic, "Towards Monosemanticity", 2023): point each dead latent at an input the SAE
  reconstructs badly, and reset its optimiser state so it starts afresh.
- Ghost grads (Anthropic, January 2024): dead latents get an extra loss that pushes them, through an
  exponential activation that is never exactly zero, to explain the reconstruction error.
"""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE


@torch.no_grad()
def resample_dead_latents(sae: SAE, optimizer: torch.optim.Optimizer, dead: torch.Tensor, x: torch.Tensor,
                          generator: torch.Generator | None = None, encoder_scale: float = 0.2) -> int:
    """Re-initialise the dead latents (dead [d_sae] bool) from inputs x [n, d_in]. Returns how many.

    Inputs are drawn with probability proportional to their squared reconstruction loss. A dead
    latent's decoder direction becomes the drawn input, centred and made unit length; its encoder
    direction is the same, scaled to encoder_scale times the live latents' mean encoder norm; its
    encoder bias becomes 0; and Adam forgets what it knew about these parameters.
    """
    idx = dead.nonzero().flatten()
    if idx.numel() == 0:
        return 0
    x_hat, _ = sae(x)
    loss = (x - x_hat).pow(2).sum(-1)  # [n]
    if float(loss.sum()) == 0:
        return 0
    # drawn on the CPU, where the trainer's generator lives, whatever the SAE's device
    picks = torch.multinomial(loss.pow(2).cpu(), idx.numel(), replacement=True, generator=generator).to(x.device)
    directions = x[picks] - sae.b_dec  # [n_dead, d_in]
    directions /= directions.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    for param, index in sae.reinitialise_latents(idx, directions, enc_norm * encoder_scale):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][index] = 0.0
    return int(idx.numel())


def ghost_grads_loss(sae: SAE, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """The ghost-grads term for the dead latents (dead [d_sae] bool); 0 when none are dead.

    The dead latents, activated by exp(pre) instead of ReLU, reconstruct the residual x - x_hat,
    scaled to half its norm; the loss is then rescaled to the size of the main reconstruction loss, so
    it adds gradient to the dead latents without changing the loss much.
    """
    if not bool(dead.any()):
        return x.new_zeros(())
    residual = (x - x_hat).detach()  # [batch, d_in]
    ghost = torch.exp(pre[:, dead]) @ sae.W_dec[dead]  # [batch, d_in]
    scale = residual.norm(dim=-1, keepdim=True) / (2 * ghost.norm(dim=-1, keepdim=True).clamp(min=1e-8))
    ghost_mse = (ghost * scale.detach() - residual).pow(2).sum(-1)  # [batch]
    mse = (x_hat - x).pow(2).sum(-1).detach()  # [batch]
    return (ghost_mse * (mse / (ghost_mse.detach() + 1e-6))).mean()
