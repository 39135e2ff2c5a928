"""Attribution graphs: which transcoder features, input tokens and transcoder errors write a prediction.

For one prompt, the *local replacement model* is the real model with every MLP replaced by its transcoder plus
an error term (what the transcoder misses on this prompt, so the output is unchanged; at BOS, which is not text,
the transcoders stay silent and the error is the whole MLP output), and with the attention
patterns and LayerNorm scales frozen at their values in the real run. With those frozen, everything between
the nodes is linear: each feature's pre-activation and each logit is a sum of direct contributions from the
embeddings, from active features of earlier layers, and from error nodes (plus constant biases). The
attribution graph holds those direct contributions as edge weights (Ameisen et al. 2025, "Circuit Tracing"):

    graph = attribute(model, transcoders, "The Eiffel Tower is in")
    kept = prune(graph)                       # the nodes and edges that carry most of the influence on the logits
    replacement_score(graph), completeness(graph)

Edges are exact for the frozen model (tests: the edges into each node sum to its value less a constant, and match
finite differences). They say what *this* linearisation computes at *this* prompt; lesson 08 checks them by
intervening on the real model.

Node order (as circuit-tracer's): active features (layer, position, latent), error nodes (layer-major), one
embedding node per position (token plus position embedding), logit nodes. adjacency[target, source].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mechlib.loading import model_device
from mechlib.prompts import to_tokens
from mechlib.sae.base import SAE
from mechlib.sae.store import run_until
from mechlib.transcoders import hooks as tc_hooks, text_positions


@dataclass
class Graph:
    prompt: str
    tokens: list[str]  # [pos]: the prompt's tokens as strings, BOS first
    token_ids: torch.Tensor  # [pos]
    features: torch.Tensor  # [n_features, 3]: (layer, pos, latent) of each active feature
    activations: torch.Tensor  # [n_features]
    logit_tokens: torch.Tensor  # [n_logits]: the most likely next tokens, most likely first
    logit_probs: torch.Tensor  # [n_logits]
    logit_values: torch.Tensor  # [n_logits]: each logit less the mean logit, or the contrast (what the edges explain)
    logit_strs: list[str]  # [n_logits]
    adjacency: torch.Tensor  # [n_nodes, n_nodes]: adjacency[target, source] = direct effect
    n_layers: int
    minus: torch.Tensor | None = None  # [1]: a contrast target's second token (logit_tokens[0] - minus[0]), else None

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_pos(self) -> int:
        return len(self.token_ids)

    @property
    def errors(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def embeddings(self) -> slice:
        return slice(self.errors.stop, self.errors.stop + self.n_pos)

    @property
    def logits(self) -> slice:
        return slice(self.embeddings.stop, self.embeddings.stop + len(self.logit_tokens))

    def error_node(self, layer: int, pos: int) -> int:
        return self.errors.start + layer * self.n_pos + pos

    def feature_node(self, layer: int, pos: int, latent: int) -> int:
        """The node index of an active feature; a clear error for one that is not active."""
        hit = ((self.features == torch.tensor([layer, pos, latent])).all(-1)).nonzero()
        if len(hit) == 0:
            raise KeyError(f"latent {latent} of layer {layer} is not active at position {pos} of {self.prompt!r}")
        return int(hit[0, 0])

    def label(self, node: int) -> str:
        """A short name for a node: 'L1 #345 @ Tower', 'err L2 @ is', 'emb @ The', 'logit Paris'."""
        if node < self.n_features:
            layer, pos, latent = self.features[node].tolist()
            return f"L{layer} #{latent} @{self.tokens[pos]}"
        if node < self.errors.stop:
            layer, pos = divmod(node - self.errors.start, self.n_pos)
            return f"err L{layer} @{self.tokens[pos]}"
        if node < self.embeddings.stop:
            return f"emb @{self.tokens[node - self.embeddings.start]}"
        return f"logit{self.logit_strs[node - self.logits.start]}"

    def position(self, node: int) -> int:
        """The token position a node sits at (logits: the last)."""
        if node < self.n_features:
            return int(self.features[node, 1])
        if node < self.errors.stop:
            return (node - self.errors.start) % self.n_pos
        if node < self.embeddings.stop:
            return node - self.embeddings.start
        return self.n_pos - 1


FREEZE = ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale")


def _freeze_hooks(n_layers: int) -> list:
    """Hooks that cut the gradient through attention patterns and LayerNorm scales: the local replacement model."""
    def detach(act, hook):
        return act.detach()

    return [(f"blocks.{L}.{name}", detach) for L in range(n_layers) for name in FREEZE] + \
        [("ln_final.hook_scale", detach)]


def _skip(W_skip: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | float:
    """A skip transcoder's linear part (weights detached: attribution differentiates activations, not weights)."""
    return 0.0 if W_skip is None else x @ W_skip.T


def logit_direction(model, token_ids: torch.Tensor, minus: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unembedding columns of `token_ids` minus the mean column (a logit less the mean logit, the quantity softmax
    cares about), or minus the columns of `minus` (a logit difference), and the matching biases.  # [d_model, n], [n]"""
    W_U = model.W_U  # [d_model, d_vocab]
    b_U = getattr(model, "b_U", None)
    b_U = torch.zeros(W_U.shape[1], device=W_U.device) if b_U is None else b_U
    if minus is not None:
        return W_U[:, token_ids] - W_U[:, minus], b_U[token_ids] - b_U[minus]
    return W_U[:, token_ids] - W_U.mean(1, keepdim=True), b_U[token_ids] - b_U.mean()


@torch.no_grad()
def clean_run(model, transcoders: Sequence[SAE], tokens: torch.Tensor):
    """The real run of tokens [1, pos], read through the transcoders: (last position's logits [d_vocab], the cache of
    the MLPs' inputs and outputs, each layer's latents [pos, d_sae], each layer's error [pos, d_model], what its
    transcoder misses; at BOS, which is not text, the whole MLP output)."""
    n_layers = model.cfg.n_layers
    names = ["blocks.0.hook_resid_pre"] + [h for L in range(n_layers) for h in tc_hooks(L)]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    text = text_positions(model, tokens)[0, :, None]  # [pos, 1]: BOS is no text; its MLP output is all error
    acts, errors = [], []
    for L, tc in enumerate(transcoders):
        x, y = cache[tc_hooks(L)[0]][0], cache[tc_hooks(L)[1]][0]  # [pos, d_model]
        z = tc.encode(x.float()) * text  # [pos, d_sae]
        acts.append(z)
        errors.append(y - tc.decode(z) - tc.skip_connection(x.float()))  # [pos, d_model]
    return logits[0, -1].float(), cache, acts, errors


@torch.enable_grad()
def attribute(model, transcoders: Sequence[SAE], prompt: str | torch.Tensor, max_logits: int = 10,
              logit_prob: float = 0.95, contrast: tuple[int, int] | None = None, batch_size: int = 128) -> Graph:
    """The attribution graph of `prompt` (a string, BOS prepended; or token ids [pos], BOS included) for the most
    likely next tokens: as many as reach `logit_prob` of the probability, at most `max_logits`. contrast=(a, b), two
    token ids: one target instead, the logit difference a - b (lesson 04's metric), which leaves out what raises both
    (that a city comes next, say) and keeps what tells them apart.

    One forward and backward pass per `batch_size` target nodes: the prompt is repeated down the batch and row b
    backpropagates target b, so each row's gradients are the edges into one target."""
    if len(transcoders) != model.cfg.n_layers:
        raise ValueError(f"attribute needs one transcoder per layer ({model.cfg.n_layers}), got {len(transcoders)}")
    device = model_device(model)
    tokens = to_tokens(model, prompt if isinstance(prompt, str) else prompt.reshape(1, -1))  # [1, pos], BOS first
    n_layers, n_pos = model.cfg.n_layers, tokens.shape[1]
    last_logits, cache, acts, errors = clean_run(model, transcoders, tokens)

    minus = None
    if contrast is None:
        probs = last_logits.softmax(-1)
        top = probs.topk(max_logits)
        n_logits = int((top.values.cumsum(0) < logit_prob).sum()) + 1
        logit_tokens, logit_probs = top.indices[:min(n_logits, max_logits)], top.values[:min(n_logits, max_logits)]
    else:
        logit_tokens, minus = (torch.tensor([int(t)], device=device) for t in contrast)
        logit_probs = torch.ones(1, device=device)  # the one target's weight in influence
    u_dirs, u_bias = logit_direction(model, logit_tokens, minus)  # [d_model, n_logits], [n_logits]

    active = [a.nonzero() for a in acts]  # per layer [n_L, 2]: (pos, latent)
    features = torch.cat([torch.cat([torch.full((len(ix), 1), L, device=device), ix], 1)
                          for L, ix in enumerate(active)])  # [n_features, 3]
    activations = torch.cat([acts[L][ix[:, 0], ix[:, 1]] for L, ix in enumerate(active)])
    n_feat = len(features)
    n_nodes = n_feat + n_layers * n_pos + n_pos + len(logit_tokens)
    adjacency = torch.zeros(n_nodes, n_nodes, device=device)
    resid0 = cache["blocks.0.hook_resid_pre"][0].float()  # [pos, d_model]
    mlp_in = [cache[tc_hooks(L)[0]][0].float() for L in range(n_layers)]
    mlp_out = [cache[tc_hooks(L)[1]][0] for L in range(n_layers)]
    # decoder rows of every active feature, scaled by its activation: what each feature writes  # [n_L, d_model]
    writes = [transcoders[L].W_dec[ix[:, 1]].detach() * acts[L][ix[:, 0], ix[:, 1], None] for L, ix in enumerate(active)]
    starts = torch.tensor([0] + [len(ix) for ix in active]).cumsum(0).tolist()

    W_enc = [tc.W_enc.detach() for tc in transcoders]  # [d_model, d_sae] each
    b_enc = [tc.b_enc.detach() for tc in transcoders]
    W_skip = [tc.W_skip.detach() if tc.W_skip is not None else None for tc in transcoders]
    # Targets in groups that stop the forward pass where they are read: layer L's features at layer L's MLP input
    # (the layers above don't matter to them), the logits after the final LayerNorm.
    groups = [(L, torch.arange(starts[L], starts[L + 1])) for L in range(n_layers)]
    groups.append((n_layers, torch.arange(n_nodes - len(logit_tokens), n_nodes)))
    for stop_layer, group in groups:
        for chunk in group.split(batch_size):
            B = len(chunk)
            leaf0 = resid0.expand(B, -1, -1).clone().requires_grad_()
            leaves = [(mlp_out[L].float() - _skip(W_skip[L], mlp_in[L])).expand(B, -1, -1).clone().requires_grad_()
                      for L in range(stop_layer)]  # [B, pos, d_model]: features + b_dec + error
            ins: dict[int, torch.Tensor] = {}

            def read(L):
                def hook(act, hook):
                    ins[L] = act
                return hook

            fwd = _freeze_hooks(n_layers) + [("blocks.0.hook_resid_pre", lambda act, hook: leaf0)]
            # an MLP's output: its features and error (leaves: the gradient stops there), plus a skip transcoder's
            # linear map of the MLP's input, through which the gradient flows as through attention
            fwd += [(tc_hooks(L)[1], (lambda L: lambda act, hook: leaves[L] + _skip(W_skip[L], ins[L]))(L))
                    for L in range(stop_layer)]
            fwd += [(tc_hooks(L)[0], read(L)) for L in range(stop_layer)]
            stop_at = tc_hooks(stop_layer)[0] if stop_layer < n_layers else "ln_final.hook_out"
            reached = run_until(model, tokens.expand(B, -1), fwd, stop_at)  # [B, pos, d_model]
            rows = torch.arange(B, device=device)
            if stop_layer < n_layers:  # feature pre-activations
                _, p, f = features[chunk].T
                values = (reached[rows, p] * W_enc[stop_layer][:, f].T).sum(-1) + b_enc[stop_layer][f]  # [B]
            else:  # logits
                i = chunk - (n_nodes - len(logit_tokens))
                values = (reached[:, -1] * u_dirs[:, i].T).sum(-1) + u_bias[i]
            values.sum().backward()
            with torch.no_grad():
                out = torch.zeros(B, n_nodes, device=device)
                out[:, n_feat + n_layers * n_pos: n_feat + n_layers * n_pos + n_pos] = (leaf0.grad * resid0).sum(-1)
                for L in range(stop_layer):
                    g = leaves[L].grad  # [B, pos, d_model]
                    err = n_feat + L * n_pos
                    out[:, err: err + n_pos] = (g * errors[L].float()).sum(-1)
                    ix = active[L]
                    out[:, starts[L]: starts[L + 1]] = (g[:, ix[:, 0]] * writes[L]).sum(-1)
                adjacency[chunk.to(device)] = out
            model.zero_grad(set_to_none=True)

    with torch.no_grad():
        logit_values = last_logits[logit_tokens] - (last_logits.mean() if minus is None else last_logits[minus])
    names = [model.to_string(t) for t in logit_tokens.tolist()]
    if minus is not None:
        names = [f"{names[0]} - {model.to_string(int(minus[0]))}"]
    return Graph(prompt=prompt if isinstance(prompt, str) else model.to_string(tokens[0, 1:]),
                 tokens=model.to_str_tokens(tokens[0]), token_ids=tokens[0].cpu(), features=features.cpu(),
                 activations=activations.detach().cpu(), logit_tokens=logit_tokens.cpu(), logit_probs=logit_probs.cpu(),
                 logit_values=logit_values.cpu(), logit_strs=names, adjacency=adjacency.cpu(), n_layers=n_layers,
                 minus=None if minus is None else minus.cpu())
