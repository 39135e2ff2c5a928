"""Training data for SAEs: activations streamed from a model, shuffled in a bounded buffer.

`ActivationStore` runs the model on token batches and collects one hook's activations (a
TransformerLens hook name, or an nnsight module path such as "transformer.h.2"). It keeps at most
`buffer_size` activations in memory, shuffles them, and hands out half the buffer before refilling, so
consecutive batches mix many documents. BOS and padding positions are left out: BOS activations are
outliers that no SAE should spend latents on. `InMemoryActivations` serves a fixed tensor the same way
(benchmarks, toy data). Both can save and restore their state, so a resumed training run sees exactly
the batches the uninterrupted one would have.
"""

from __future__ import annotations

from typing import Iterator

import torch

from mechlib import corpus
from mechlib.course_tokenizers import word_encoder
from mechlib.loading import is_nnsight, module_at
from mechlib.sae.tokens import pretokenized


class InMemoryActivations:
    """Shuffled batches [batch_size, d_in] from a fixed tensor of activations [n, d_in]; with targets [n, d_out]
    (a transcoder's), batches of (activations, targets) rows drawn together."""

    def __init__(self, activations: torch.Tensor, batch_size: int, seed: int = 0, scale: float = 1.0,
                 targets: torch.Tensor | None = None):
        if targets is not None and len(targets) != len(activations):
            raise ValueError(f"{len(activations)} activations but {len(targets)} targets: one target row per input")
        self.activations, self.batch_size, self.scale, self.targets = activations, batch_size, scale, targets
        self.generator = torch.Generator().manual_seed(seed)
        self._order, self._pos = torch.randperm(len(activations), generator=self.generator), 0

    @property
    def device(self) -> torch.device:
        return self.activations.device

    def next_batch(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self._pos + self.batch_size > len(self._order):
            self._order, self._pos = torch.randperm(len(self.activations), generator=self.generator), 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        if self.targets is not None:
            return self.activations[idx] * self.scale, self.targets[idx] * self.scale
        return self.activations[idx] * self.scale

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._order, self._pos = state["order"].clone(), state["pos"]


def hook_width(model, hook_name: str) -> int:
    """The last dimension of a TransformerLens hook's activations; a clear error for an unknown hook."""
    names = set(model.hook_dict)
    if hook_name not in names:
        close = sorted(n for n in names if hook_name.split(".")[-1] in n)[:8]
        raise ValueError(f"{hook_name!r} is not a hook of this model. "
                         + (f"Hooks with a similar name: {close}" if close else "See model.hook_dict for the hooks.")
                         + " Residual stream hooks look like 'blocks.2.hook_resid_post'.")
    bos = model.tokenizer.bos_token_id or 0
    _, cache = model.run_with_cache(torch.tensor([[bos]], device=model.cfg.device), names_filter=hook_name)
    return cache[hook_name].shape[-1]


def corpus_token_batches(model, batch_size: int = 32, seed: int = 0, n_ctx: int = 128) -> corpus.PackedTokenBatches:
    """The course corpus's training mixture in the model's own tokenizer, packed into rows of
    min(n_ctx, the model's context) tokens, each word encoded on its own as in the course models' training
    (so a random span's ".." is two "." tokens, not one unknown token).  # an iterator of [batch, seq]"""
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    context = model.cfg.n_ctx if hasattr(model, "cfg") else model.config.n_positions

    encode_words = word_encoder(tok)  # word by word, as the course models were trained: every token is a trained one
    return corpus.PackedTokenBatches(lambda doc: encode_words(doc.words), bos, seed, batch_size, min(n_ctx, context))


def tokens_for(n_batches: int, batch_size: int, buffer_size: int = 65536) -> int:
    """About how many corpus tokens a store reads to serve n_batches batches (the buffer's first fill, and
    a margin for the BOS positions it skips): what to pre-tokenize for a run."""
    return int(1.1 * (n_batches * batch_size + buffer_size))


def stop_after(hook_name: str) -> dict:
    """TransformerLens run kwargs that stop after the block of hook_name ("blocks.N...."): the layers above it,
    and the unembedding (a 50,257-token vocabulary's logits cost more than the whole small model), are skipped."""
    parts = hook_name.split(".")
    return {"stop_at_layer": int(parts[1]) + 1} if parts[0] == "blocks" and parts[1:2] and parts[1].isdigit() else {}


class _Stop(Exception):
    pass


def run_until(model, tokens: torch.Tensor, fwd_hooks: list, hook_name: str) -> torch.Tensor:
    """The activation at `hook_name` of a TransformerLens run with `fwd_hooks`, stopping there: nothing after it is
    computed. (stop_at_layer cannot stop after the last block; this can, sparing a 50,257-token vocabulary's
    logits, which cost more than the whole small model.)  # [batch, pos, ...]"""
    out = {}

    def stop(act, hook):
        out["act"] = act
        raise _Stop

    try:
        with model.hooks(fwd_hooks=list(fwd_hooks) + [(hook_name, stop)]):
            model(tokens)
    except _Stop:
        return out["act"]
    raise RuntimeError(f"the run did not reach {hook_name}")


def cache_until(model, tokens: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The activations of `names` (detached) in one run that stops after the last of their blocks, even the model's
    last; with a hook outside the blocks among them, the whole run."""
    if not all(stop_after(n) for n in names):
        return dict(model.run_with_cache(tokens, names_filter=list(names))[1].items())
    cache: dict[str, torch.Tensor] = {}
    layer = max(int(n.split(".")[1]) for n in names)
    after = f"blocks.{layer + 1}.hook_resid_pre" if layer + 1 < model.cfg.n_layers else "ln_final.hook_in"
    run_until(model, tokens, [(n, (lambda n: lambda act, hook: cache.__setitem__(n, act.detach()))(n)) for n in names],
              after)
    return cache


def real_tokens(tokenizer, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, seq] bool: False at BOS, padding and end-of-text tokens, whose activations SAEs skip."""
    special = {t for t in (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None}
    return ~torch.isin(tokens, torch.tensor(sorted(special), device=tokens.device))




class ActivationStore:
    """Activations of one hook of `model` on the course corpus (or any token batches), shuffled.

    model: a TransformerLens bridge (hook: a hook name) or an nnsight model (hook: a module path; its
    output, or the first element of a tuple output). tokens: an iterator of token batches
    [batch, seq]; the default is the course corpus's training mixture, tokenized by the model's
    tokenizer. normalize: scale activations so that their mean norm is sqrt(d_in) (sae-lens's
    "expected_average_only_in"); the factor is `self.scale`, measured once on the first buffer.
    n_tokens: about how many corpus tokens the run will read; given, the default corpus stream is
    tokenized once and cached on disk (`tokens.pretokenized`: the same batches, without the Python work
    that bounds a GPU). target: a second hook whose activations at the same positions are the targets (a
    transcoder's, e.g. "blocks.1.hook_mlp_out" for the input "blocks.1.mlp.hook_in"); next_batch then returns
    (inputs, targets), both scaled by `self.scale` (measured on the inputs).
    """

    def __init__(self, model, hook: str, batch_size: int = 4096, buffer_size: int = 65536,
                 tokens: Iterator[torch.Tensor] | None = None, token_batch_size: int = 32, seed: int = 0,
                 normalize: bool = False, device: str | torch.device | None = None, n_tokens: int | None = None,
                 target: str | None = None):
        self.model, self.hook, self.batch_size, self.target = model, hook, batch_size, target
        self.backend = "nnsight" if is_nnsight(model) else "transformer_lens"
        self.device = device or (model.cfg.device if self.backend == "transformer_lens" else model.device)
        if batch_size > buffer_size // 2:
            raise ValueError(f"buffer_size ({buffer_size}) must be at least twice batch_size ({batch_size})")
        if self.backend == "transformer_lens":
            hook_width(model, hook)  # a clear error for a hook the model doesn't have
            if target is not None:
                hook_width(model, target)
        self.buffer_size = buffer_size
        if tokens is None:
            tokens = (pretokenized(model, n_tokens, token_batch_size, seed) if n_tokens
                      else corpus_token_batches(model, token_batch_size, seed))
        self.tokens = tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: torch.Tensor | None = None  # [n, d_in], on self.device
        self.scale = 1.0
        self._fill()
        self.d_in = self._width  # the input hook's width (the buffer holds the target's beside it)
        if normalize:
            inputs = self.buffer[:, :self.d_in]
            self.scale = float(self.d_in ** 0.5 / inputs.norm(dim=-1).mean())

    @torch.no_grad()
    def activations(self, tokens: torch.Tensor) -> torch.Tensor:
        """The hook's activations on tokens [batch, seq], without BOS/pad positions, and with a target hook the
        target's beside them.  # [n, d_in] or [n, d_in + d_out]"""
        tokens = tokens.to(self.device)
        hooks = [self.hook] if self.target is None else [self.hook, self.target]
        if self.backend == "transformer_lens":
            cache = cache_until(self.model, tokens, hooks)
            acts = [cache[h] for h in hooks]
        else:
            saved = []
            with self.model.trace(tokens):  # a plain loop: nnsight traces this block's own code
                for h in hooks:
                    saved.append(module_at(self.model, h).output.save())
            acts = [out[0] if isinstance(out, tuple) else out for out in saved]
        self._width = acts[0].shape[-1]
        return torch.cat(acts, -1)[real_tokens(self.model.tokenizer, tokens)].float()

    def _fill(self) -> None:
        """Top the buffer up to buffer_size with fresh activations and shuffle it."""
        chunks = [] if self.buffer is None else [self.buffer]
        have = 0 if self.buffer is None else len(self.buffer)
        while have < self.buffer_size:
            acts = self.activations(next(self.tokens))
            chunks.append(acts)
            have += len(acts)
        buffer = torch.cat(chunks)[: self.buffer_size]
        perm = torch.randperm(len(buffer), generator=self.generator).to(buffer.device)
        self.buffer = buffer[perm]

    def next_batch(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[batch_size, d_in], scaled by self.scale; with a target hook, (inputs, targets)."""
        if len(self.buffer) - self.batch_size < self.buffer_size // 2:
            self._fill()
        batch, self.buffer = self.buffer[: self.batch_size] * self.scale, self.buffer[self.batch_size:]
        return batch if self.target is None else (batch[:, :self.d_in], batch[:, self.d_in:])

    def state_dict(self) -> dict:
        """Everything needed to continue the same stream: the buffer, the RNG and the token source's position."""
        tokens = self.tokens.state_dict() if hasattr(self.tokens, "state_dict") else None
        return {"buffer": self.buffer.cpu().clone(), "generator": self.generator.get_state(), "scale": self.scale,
                "tokens": tokens}

    def load_state_dict(self, state: dict) -> None:
        if state["tokens"] is not None and not hasattr(self.tokens, "load_state_dict"):
            raise ValueError("this store's token source cannot restore a position: resume with the same "
                             "kind of source (the default corpus source can)")
        self.buffer = state["buffer"].to(self.device)
        self.generator.set_state(state["generator"])
        self.scale = state["scale"]
        if state["tokens"] is not None:
            self.tokens.load_state_dict(state["tokens"])
