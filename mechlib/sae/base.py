"""What every sparse autoencoder shares: the weights (in sae-lens's layout and names), encode and
decode, the loss, and the metrics the trainer reports. Each architecture is a small subclass in its own
file that says how latents are activated and what its sparsity penalty is.

Shapes: x [batch, d_in], pre-activations and latents [batch, d_sae], W_enc [d_in, d_sae], W_dec [d_sae, d_in].

A transcoder is the same module with another output (cfg.d_out): it reads x [batch, d_in] and writes an estimate of
a target y [batch, d_out], such as an MLP's output from its input (Dunefsky et al. 2024), with W_dec [d_sae, d_out]
and b_dec [d_out] and no input centring. Every architecture and the one trainer serve both. A skip transcoder
(cfg.skip) adds a linear map of its input to its output, x @ W_skip.T (Paulo et al. 2025, "Transcoders beat sparse
autoencoders for interpretability"): the latents then only need to explain what is not linear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class SAEConfig:
    """One config for every architecture; each reads the fields it needs (plain values, as in nanoGPT)."""

    d_in: int
    d_sae: int
    architecture: str = "standard"  # standard | april | topk | batchtopk | jumprelu
    l1_coefficient: float = 1.0  # standard, april: weight of the L1 penalty
    k: int = 16  # topk: active latents per input; batchtopk: per input on average
    aux_k_coefficient: float = 1.0  # topk, batchtopk: weight of the AuxK loss (as sae-lens; our MSE is summed over d_in)
    l0_coefficient: float = 1.0  # jumprelu: weight of the L0 penalty
    bandwidth: float = 0.001  # jumprelu: width of the straight-through estimator's window
    threshold_init: float = 0.001  # jumprelu: initial threshold
    threshold_lr: float = 0.01  # batchtopk: rate of the moving average that sets the inference threshold
    d_out: int | None = None  # a transcoder's output width (it reads d_in, writes d_out); None: an SAE (d_in)
    skip: bool = False  # a transcoder's linear skip connection W_skip [d_out, d_in] (Paulo et al. 2025)
    seed: int = 0
    metadata: dict = field(default_factory=dict)  # model_name, hook_name, ...: saved with the weights

    def to_dict(self) -> dict:
        return asdict(self)


class SAE(torch.nn.Module):
    """x -> latents = activation(pre) with pre = (x - b_dec?) W_enc + b_enc -> x_hat = latents W_dec + b_dec."""

    architecture = ""  # the name in SAEConfig.architecture
    saved_architecture = ""  # the name sae-lens gives the inference form
    apply_b_dec_to_input = True  # subtract b_dec from the input before encoding

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(cfg.d_sae, self.d_out, generator=g)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)  # unit-norm decoder directions
        if self.transcoder:  # unit-norm encoder directions of their own
            w_enc = torch.randn(cfg.d_in, cfg.d_sae, generator=g)
            w_enc /= w_enc.norm(dim=0, keepdim=True)
        else:  # W_enc starts as the decoder's transpose
            w_enc = w_dec.T.clone()
        self.register_weights(w_enc, w_dec, torch.zeros(cfg.d_sae), torch.zeros(self.d_out))
        if cfg.skip and not self.transcoder:
            raise ValueError("a skip connection maps a transcoder's input to its output: set d_out as well")
        # [d_out, d_in] (circuit-tracer's layout), starting at zero; None without a skip connection
        self.W_skip = torch.nn.Parameter(torch.zeros(self.d_out, cfg.d_in)) if cfg.skip else None

    @property
    def transcoder(self) -> bool:
        """Whether this module writes another space than it reads (cfg.d_out set)."""
        return self.cfg.d_out is not None

    @property
    def d_out(self) -> int:
        return self.cfg.d_in if self.cfg.d_out is None else self.cfg.d_out

    def register_weights(self, W_enc: torch.Tensor, W_dec: torch.Tensor, b_enc: torch.Tensor,
                         b_dec: torch.Tensor) -> None:
        """Make the trainable parameters from initial weights. W_enc, W_dec, b_enc and b_dec are always the
        weights the forward pass uses; an architecture that trains another parametrisation of them
        (TopK's weight-normalised decoder) stores that instead and exposes these four as properties."""
        self.W_dec = torch.nn.Parameter(W_dec)  # [d_sae, d_in]
        self.W_enc = torch.nn.Parameter(W_enc)  # [d_in, d_sae]
        self.b_enc = torch.nn.Parameter(b_enc)  # [d_sae]
        self.b_dec = torch.nn.Parameter(b_dec)  # [d_in]

    # -- the forward pass --
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> [..., d_sae]"""
        if self.apply_b_dec_to_input and not self.transcoder:  # (x - b_dec) W_enc, with b_dec's share computed once, not per input
            return x @ self.W_enc + (self.b_enc - self.b_dec @ self.W_enc)
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """pre-activations -> latent activations, both [..., d_sae]."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> latent activations [..., d_sae]."""
        return self.activate(self.pre_activation(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latents [..., d_sae] -> reconstruction [..., d_in]."""
        return z @ self.W_dec + self.b_dec

    def skip_connection(self, x: torch.Tensor) -> torch.Tensor | float:
        """A skip transcoder's linear part, x [..., d_in] -> [..., d_out]; 0 without one."""
        return 0.0 if self.W_skip is None else x @ self.W_skip.T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (estimate, latents): the decoded latents, plus the skip connection if there is one."""
        z = self.encode(x)
        return self.decode(z) + self.skip_connection(x), z

    # -- training --
    def reconstruct(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pre-activations -> (reconstruction, latents): the training forward pass after the encoder matmul."""
        z = self.activate(pre)
        return self.decode(z), z

    def sparsity_loss(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(())

    def aux_loss(self, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor,
                 dead: torch.Tensor | None) -> torch.Tensor:
        """An extra term that revives dead latents (TopK's AuxK); dead [d_sae] bool or None."""
        return x.new_zeros(())

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None,
             target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Squared error against target (default x: an SAE), summed over its width and averaged over the batch,
        plus sparsity and auxiliary terms. Returns the loss and its parts, with x_hat, z and pre for the trainer's
        metrics."""
        target = x if target is None else target
        if target.shape[-1] != self.d_out:
            raise ValueError(f"target has width {target.shape[-1]}, this module writes {self.d_out}: "
                             + ("a transcoder needs its target, e.g. the MLP's output" if self.transcoder else
                                "give a transcoder SAEConfig(d_out=...) to predict another activation"))
        pre = self.pre_activation(x)
        x_hat, z = self.reconstruct(pre)
        x_hat = x_hat + self.skip_connection(x)
        mse = (x_hat - target).pow(2).sum(-1).mean()
        sparsity = self.sparsity_loss(z, pre)
        aux = self.aux_loss(target, x_hat, pre, dead)
        return mse + sparsity + aux, {"mse": mse, "sparsity": sparsity, "aux": aux, "x_hat": x_hat, "z": z, "pre": pre}

    @torch.no_grad()
    def after_step(self) -> None:
        """Called after each optimiser step: constraints on the weights (unit-norm decoder, ...)."""

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    @torch.no_grad()
    def reinitialise_latents(self, idx: torch.Tensor, directions: torch.Tensor,
                             encoder_norm: torch.Tensor | float) -> list[tuple[torch.nn.Parameter, tuple]]:
        """Point latents idx at unit `directions` [n, d_in]: decoder rows = directions, encoder columns =
        directions * encoder_norm, encoder biases 0. Returns (parameter, index) pairs of what was written,
        so that the caller can reset the optimiser's state there."""
        self.W_dec[idx] = directions
        self.W_enc[:, idx] = directions.T * encoder_norm
        self.b_enc[idx] = 0.0
        return [(self.W_dec, (idx,)), (self.W_enc, (slice(None), idx)), (self.b_enc, (idx,))]

    # -- files --
    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set W_enc, W_dec, b_enc, b_dec (the weights the forward pass uses) from a file's tensors."""
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(self, name).copy_(tensors[name])

    def inference_weights(self) -> dict[str, torch.Tensor]:
        """W_enc, W_dec, b_enc, b_dec (and W_skip) as an inference SAE of saved_architecture uses them."""
        names = ("W_enc", "W_dec", "b_enc", "b_dec") + (("W_skip",) if self.W_skip is not None else ())
        return {name: getattr(self, name).detach() for name in names}

    def inference_threshold(self) -> torch.Tensor | None:
        """For architectures saved as JumpReLU: the per-latent threshold [d_sae]."""
        return None

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Trained on activations multiplied by `scale`: change the weights so that the SAE takes
        and returns raw activations instead. Latent activations are unchanged."""
        if self.transcoder:
            raise ValueError("fold_input_scale is for SAEs, which read and write one space: train a transcoder "
                             "on raw activations, or scale its input and output yourself")
        self.W_enc *= scale
        self.W_dec /= scale
        self.b_dec /= scale


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained: ||x - x_hat||^2 / ||x - mean(x)||^2 over the batch."""
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def l0(z: torch.Tensor) -> torch.Tensor:
    """Mean number of active latents per input."""
    return (z > 0).float().sum(-1).mean()
