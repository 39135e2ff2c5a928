"""mechlib: the tested helper library of the mechanistic-interpretability course."""

from mechlib import fake_cuda
from mechlib.claims import claim
from mechlib.loading import ModelLoadError, best_device, load_model, load_tokenizer

fake_cuda.enable_from_environment()  # MECHLIB_FAKE_CUDA=1: check device handling on a CPU (make fake-cuda)

__all__ = ["ModelLoadError", "best_device", "claim", "load_model", "load_tokenizer"]
__version__ = "0.1.0"
