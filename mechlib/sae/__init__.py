"""Sparse autoencoders: one small file per architecture, one trainer, one activation store, shared
metrics, and files in sae-lens's format."""

from mechlib.sae.april import AprilSAE
from mechlib.sae.base import SAE, SAEConfig, fvu, l0
from mechlib.sae.batchtopk import BatchTopKSAE
from mechlib.sae.jumprelu import JumpReLUSAE
from mechlib.sae.standard import StandardSAE
from mechlib.sae.store import ActivationStore, InMemoryActivations
from mechlib.sae.topk import TopKSAE
from mechlib.sae.training import Trainer, TrainConfig, train_sae

ARCHITECTURES: dict[str, type[SAE]] = {cls.architecture: cls for cls in
                                       (StandardSAE, AprilSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE)}


def make_sae(cfg: SAEConfig) -> SAE:
    """The SAE of cfg.architecture."""
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown SAE architecture {cfg.architecture!r}: choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.architecture](cfg)


__all__ = ["ARCHITECTURES", "ActivationStore", "AprilSAE", "BatchTopKSAE", "InMemoryActivations", "JumpReLUSAE",
           "SAE", "SAEConfig", "StandardSAE", "TopKSAE", "TrainConfig", "Trainer", "fvu", "l0", "make_sae",
           "train_sae"]
