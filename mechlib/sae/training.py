"""One trainer for every SAE architecture: Adam on a stream of activation batches, with a progress
bar that shows live L0 and FVU."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from mechlib.sae.base import SAE, fvu, l0


def train_sae(sae: SAE, next_batch: Callable[[], torch.Tensor], steps: int, lr: float = 1e-3,
              progress: bool = True, log_every: int = 50) -> list[dict[str, float]]:
    """Train sae on batches from next_batch() ([batch, d_in] each). Returns the logged metrics."""
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    history = []
    bar = tqdm(range(steps), desc=f"SAE ({sae.architecture})", disable=not progress, mininterval=1)
    for step in bar:
        x = next_batch()
        loss, parts = sae.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.after_step()
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                row = {"step": step, "loss": loss.item(), "L0": l0(parts["z"]).item(),
                       "FVU": fvu(x, parts["x_hat"]).item()}
            history.append(row)
            bar.set_postfix(L0=f"{row['L0']:.1f}", FVU=f"{row['FVU']:.3f}")
    return history
