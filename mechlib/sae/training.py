"""One trainer for every SAE architecture: Adam on a stream of activation batches, with a progress bar
showing live L0, FVU and the dead fraction, dead-latent remedies, and checkpoints that resume exactly.

A data source is anything with next_batch() -> [batch, d_in] (ActivationStore, InMemoryActivations),
or a plain function returning a batch; for a transcoder, next_batch() -> (inputs [batch, d_in], targets
[batch, d_out]). To resume exactly, it must also have state_dict() and
load_state_dict().
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from mechlib.sae.base import SAE, fvu, l0
from mechlib.sae.dead import ghost_grads_loss, resample_dead_latents


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 1e-3
    dead_after: int = 200  # steps without firing after which a latent counts as dead
    remedy: str = "none"  # none | resample | ghost_grads (TopK's AuxK is part of the architecture)
    resample_every: int = 500  # resample: steps between resamplings...
    resample_until: float = 0.7  # ...during this fraction of training
    resample_inputs: int = 8192  # resample: inputs to draw from
    log_every: int = 50
    seed: int = 0
    clip_grad_norm: float | None = None  # clip the gradient's total norm before each step (sae-lens clips at 1.0)


class Trainer:
    """Trains `sae` on batches from `source`; step() advances one batch, run() to the end."""

    def __init__(self, sae: SAE, source, cfg: TrainConfig | None = None):
        self.sae, self.cfg = sae, cfg or TrainConfig()
        if self.cfg.remedy not in ("none", "resample", "ghost_grads"):
            raise ValueError(f"unknown remedy {self.cfg.remedy!r}: use 'none', 'resample' or 'ghost_grads'")
        if self.cfg.remedy == "resample" and sae.transcoder:
            raise ValueError("resampling points dead latents at badly reconstructed inputs, which a transcoder "
                             "doesn't reconstruct: use remedy='ghost_grads', or an architecture with AuxK (topk)")
        self.source = source
        self.next_batch: Callable[[], torch.Tensor] = getattr(source, "next_batch", source)
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=self.cfg.lr)
        self.step_count = 0
        device = sae.W_dec.device
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)  # [d_sae]
        self.generator = torch.Generator().manual_seed(self.cfg.seed)
        self.history: list[dict[str, float]] = []
        self.resampled = 0

    def dead(self) -> torch.Tensor:
        """[d_sae] bool: latents that have not fired for cfg.dead_after steps."""
        return self.since_fired >= self.cfg.dead_after

    def step(self) -> dict[str, torch.Tensor]:
        sae, cfg = self.sae, self.cfg
        sae.train()
        batch = self.next_batch()
        x, target = batch if isinstance(batch, tuple) else (batch, batch)  # a transcoder's (input, target)
        dead = self.dead()
        with torch.enable_grad():  # also inside a lesson's torch.no_grad() (lesson 08 trains transcoders on first use)
            loss, parts = sae.loss(x, dead, target)
            if cfg.remedy == "ghost_grads":
                loss = loss + ghost_grads_loss(sae, target, parts["x_hat"], parts["pre"], dead)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.clip_grad_norm)
        self.optimizer.step()
        sae.after_step()
        fired = (parts["z"] > 0).any(0)  # [d_sae]
        self.since_fired = torch.where(fired, 0, self.since_fired + 1)
        self.step_count += 1
        if (cfg.remedy == "resample" and self.step_count % cfg.resample_every == 0
                and self.step_count <= cfg.resample_until * cfg.steps):
            inputs = torch.cat([self.next_batch() for _ in range(max(1, cfg.resample_inputs // len(x)))])
            n = resample_dead_latents(sae, self.optimizer, self.dead(), inputs, self.generator)
            self.since_fired[self.dead()] = 0
            self.resampled += n
        parts["x"], parts["loss"] = target, loss  # FVU is of what the module reconstructs
        return parts

    def run(self, progress: bool = True, checkpoint: str | Path | None = None,
            checkpoint_every: int | None = None) -> list[dict[str, float]]:
        """Train to cfg.steps (from wherever this trainer is), logging metrics; optionally checkpoint."""
        bar = tqdm(total=self.cfg.steps, initial=self.step_count, desc=f"SAE ({self.sae.architecture})",
                   disable=not progress, mininterval=1)
        while self.step_count < self.cfg.steps:
            parts = self.step()
            bar.update(1)
            if self.step_count % self.cfg.log_every == 0 or self.step_count == self.cfg.steps:
                with torch.no_grad():
                    row = {"step": self.step_count, "loss": parts["loss"].item(), "L0": l0(parts["z"]).item(),
                           "FVU": fvu(parts["x"], parts["x_hat"]).item(),
                           "dead": self.dead().float().mean().item()}
                self.history.append(row)
                bar.set_postfix(L0=f"{row['L0']:.1f}", FVU=f"{row['FVU']:.3f}", dead=f"{row['dead']:.1%}")
            if checkpoint and checkpoint_every and self.step_count % checkpoint_every == 0:
                self.save_checkpoint(checkpoint)
        bar.close()
        return self.history

    # -- checkpoints --
    def state_dict(self) -> dict:
        source_state = self.source.state_dict() if hasattr(self.source, "state_dict") else None
        return {"sae": self.sae.state_dict(), "sae_cfg": self.sae.cfg.to_dict(), "train_cfg": asdict(self.cfg),
                "optimizer": self.optimizer.state_dict(), "step": self.step_count, "since_fired": self.since_fired,
                "generator": self.generator.get_state(), "history": self.history, "resampled": self.resampled,
                "source": source_state}

    def save_checkpoint(self, path: str | Path) -> None:
        if not hasattr(self.source, "state_dict"):
            raise ValueError("this data source cannot save its position, so a resumed run would see other "
                             "batches: train from an ActivationStore or InMemoryActivations to checkpoint")
        torch.save(self.state_dict(), path)

    def load_state_dict(self, state: dict) -> None:
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count, self.history, self.resampled = state["step"], state["history"], state["resampled"]
        self.since_fired = state["since_fired"].to(self.since_fired.device)
        self.generator.set_state(state["generator"])
        if state["source"] is not None:
            self.source.load_state_dict(state["source"])

    @classmethod
    def resume(cls, path: str | Path, source, device: str | torch.device | None = None) -> "Trainer":
        """A trainer in the state saved at `path`, continuing with `source` (built as before), on
        `device` (default: where the source's activations live)."""
        from mechlib.sae import SAEConfig, make_sae

        if device is None:
            device = getattr(source, "device", "cpu")
        state = torch.load(path, weights_only=False, map_location="cpu")  # the optimiser moves its own state
        sae = make_sae(SAEConfig(**state["sae_cfg"])).to(device)  # before the optimiser is built on its parameters
        trainer = cls(sae, source, TrainConfig(**state["train_cfg"]))
        trainer.load_state_dict(state)
        return trainer


def train_sae(sae: SAE, source, steps: int, lr: float = 1e-3, progress: bool = True, **kwargs) -> list[dict[str, float]]:
    """Train sae for `steps` batches from source; kwargs are TrainConfig fields. Returns the logged metrics."""
    return Trainer(sae, source, TrainConfig(steps=steps, lr=lr, **kwargs)).run(progress=progress)
