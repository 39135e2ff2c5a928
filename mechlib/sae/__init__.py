"""Sparse autoencoders: one small file per architecture, one trainer, shared metrics."""

from mechlib.sae.base import SAE, SAEConfig, fvu, l0
from mechlib.sae.standard import StandardSAE
from mechlib.sae.training import train_sae

__all__ = ["SAE", "SAEConfig", "StandardSAE", "fvu", "l0", "train_sae"]
