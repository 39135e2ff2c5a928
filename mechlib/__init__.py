"""mechlib: the tested helper library of the mechanistic-interpretability course."""

from mechlib.loading import ModelLoadError, best_device, load_model, load_tokenizer

__all__ = ["ModelLoadError", "best_device", "load_model", "load_tokenizer"]
__version__ = "0.1.0"
