"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations of each input, no sparsity penalty.
Dead latents are revived by the AuxK loss: the top dead latents must reconstruct what the live ones
miss.

The decoder is weight-normalised, as in sae-lens (rescale_acts_by_decoder_norm): the trained
parameters are W_dec_v, whose rows are the directions at a free length, and W_enc_v, b_enc_v; the
forward pass uses W_dec = W_dec_v's rows made unit length and scales the encoder by their lengths,
so the lengths never change what the SAE computes. W_enc, W_dec and b_enc are those effective
weights (properties), the same names with the same meaning as in every other architecture.
Starting the rows at length 0.1 (Anthropic's April 2024 initialisation) makes each Adam step turn
the directions ten times further; a TopK SAE learns markedly faster per token that way than with
unit rows renormalised after each step. Files hold the effective weights: an ordinary TopK SAE.
"""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE


def keep_top(values: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the k largest entries of each row, and the negative ones.  # [..., d_sae]"""
    top = values.topk(k, dim=-1)
    return torch.zeros_like(values).scatter(-1, top.indices, torch.relu(top.values))


def auxk_loss(sae: SAE, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, dead: torch.Tensor | None,
              coefficient: float) -> torch.Tensor:
    """The top d_in/2 dead latents reconstruct the residual x - x_hat (Gao et al. 2024, appendix B.1)."""
    if dead is None or not bool(dead.any()):
        return x.new_zeros(())
    n_dead = int(dead.sum())
    k_aux = min(x.shape[-1] // 2, n_dead)
    dead_pre = torch.where(dead, pre, -torch.inf)  # [batch, d_sae]: live latents can't be picked
    aux_z = keep_top(dead_pre, k_aux)
    residual = (x - x_hat).detach()
    aux_loss = (aux_z @ sae.W_dec - residual).pow(2).sum(-1).mean()
    return coefficient * min(n_dead / (x.shape[-1] // 2), 1.0) * aux_loss


class TopKSAE(SAE):
    architecture = "topk"
    saved_architecture = "topk"
    decoder_init_norm = 0.1

    def register_weights(self, W_enc, W_dec, b_enc, b_dec) -> None:
        r = self.decoder_init_norm
        self.W_dec_v = torch.nn.Parameter(W_dec * r)  # [d_sae, d_in]: decoder directions at a free length
        self.W_enc_v = torch.nn.Parameter(W_enc * r)  # [d_in, d_sae]: W_enc = W_enc_v * lengths
        self.b_enc_v = torch.nn.Parameter(b_enc)  # [d_sae]: b_enc = b_enc_v * lengths
        self.b_dec = torch.nn.Parameter(b_dec)  # [d_in]

    def _lengths(self) -> torch.Tensor:
        return self.W_dec_v.norm(dim=-1).clamp(min=1e-8)  # [d_sae]

    @property
    def W_dec(self) -> torch.Tensor:  # [d_sae, d_in], unit rows
        return self.W_dec_v / self._lengths()[:, None]

    @property
    def W_enc(self) -> torch.Tensor:  # [d_in, d_sae]: scale the small weights, not the big pre-activations
        return self.W_enc_v * self._lengths()

    @property
    def b_enc(self) -> torch.Tensor:  # [d_sae]
        return self.b_enc_v * self._lengths()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return keep_top(pre, self.cfg.k)

    def reconstruct(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode only the k active latents of each input: a gather of k decoder rows instead of a
        matmul with d_sae mostly-zero latents (30x less work at k = 16, d_sae = 1024)."""
        top = pre.topk(self.cfg.k, dim=-1)
        values = torch.relu(top.values)  # [batch, k]
        x_hat = torch.nn.functional.embedding_bag(top.indices, self.W_dec, per_sample_weights=values,
                                                  mode="sum") + self.b_dec  # [batch, d_in]
        z = torch.zeros_like(pre).scatter_(-1, top.indices, values.detach())  # [batch, d_sae], for metrics
        return x_hat, z

    def aux_loss(self, x, x_hat, pre, dead):
        return auxk_loss(self, x, x_hat, pre, dead, self.cfg.aux_k_coefficient)

    @torch.no_grad()
    def reinitialise_latents(self, idx, directions, encoder_norm):
        """As SAE.reinitialise_latents, writing the parametrisation: new rows start at decoder_init_norm."""
        r = self.decoder_init_norm
        self.W_dec_v[idx] = directions * r
        self.W_enc_v[:, idx] = directions.T * encoder_norm / r
        self.b_enc_v[idx] = 0.0
        return [(self.W_dec_v, (idx,)), (self.W_enc_v, (slice(None), idx)), (self.b_enc_v, (idx,))]

    @torch.no_grad()
    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = tensors["W_dec"].norm(dim=-1)
        if not torch.allclose(lengths, torch.ones_like(lengths), atol=1e-3):
            raise ValueError(f"this TopK SAE's decoder rows have lengths {lengths.min():.3g}..{lengths.max():.3g}; "
                             f"mechlib's TopK SAE keeps unit rows (the latents' scale lives in the encoder), so it "
                             f"can't hold these weights exactly. Load the file with sae-lens instead.")
        self.W_dec_v.copy_(tensors["W_dec"])
        self.W_enc_v.copy_(tensors["W_enc"])
        self.b_enc_v.copy_(tensors["b_enc"])
        self.b_dec.copy_(tensors["b_dec"])

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """As SAE.fold_input_scale; the decoder's length is not free here, so the latents shrink by
        1/scale instead (which latents fire is unchanged)."""
        if self.transcoder:
            raise ValueError("fold_input_scale is for SAEs, which read and write one space: train a transcoder "
                             "on raw activations, or scale its input and output yourself")
        self.b_enc_v /= scale
        self.b_dec /= scale
