"""The corpus, tokenized once and cached on disk: what sae-lens gets from a pre-tokenized dataset.

Generating the course corpus and tokenizing it is Python work, about 80k tokens/s on one core. On a
CPU the model's forward pass is slower than that, but a GPU runs the small models and trains an SAE
many times faster, so a live stream would bound it. `pretokenized(model, n_tokens)` makes the first
n_tokens of the model's packed corpus stream once, saves them in ~/.cache/mechlib/tokens/ (or
$MECHLIB_CACHE/tokens/), and serves them in the same order: the same batches as the live stream
(`store.corpus_token_batches`), without the Python work. Past the cached rows it goes on generating
live from where the cache ends, so the stream never changes, only its cost.

    tokens = pretokenized(model, n_tokens=1_300_000)          # [32, 128] batches, cached
    store = ActivationStore(model, hook, tokens=tokens)        # or ActivationStore(..., n_tokens=...)
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mechlib import corpus
from mechlib.loading import cache_dir


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary: rows made with one tokenizer are never served for another."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(vocab.encode()).hexdigest()[:12]


class TokenRows:
    """Batches [batch_size, n_ctx] of pre-tokenized rows [n_rows, n_ctx], in order; past the last row,
    rows from `live` (the same stream, positioned where the rows end). Its position can be saved."""

    def __init__(self, rows: torch.Tensor, batch_size: int, live: corpus.PackedTokenBatches):
        self.rows, self.batch_size, self.live, self.pos = rows, batch_size, live, 0  # rows [n_rows, n_ctx]

    def __iter__(self) -> "TokenRows":
        return self

    def __next__(self) -> torch.Tensor:
        cached = self.rows[self.pos:self.pos + self.batch_size].long()
        self.pos += len(cached)
        if len(cached) == self.batch_size:
            return cached
        self.live.batch_size = self.batch_size - len(cached)  # the cache ran out: the rest comes live
        fresh = next(self.live)
        self.live.batch_size = self.batch_size
        return torch.cat([cached, fresh])

    def state_dict(self) -> dict:
        return {"pos": self.pos, "live": self.live.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]
        self.live.load_state_dict(state["live"])


def _rng_state(live: corpus.PackedTokenBatches) -> str:
    return json.dumps(live.state_dict()["rng"])


def _set_rng_state(live: corpus.PackedTokenBatches, saved: str) -> None:
    version, internal, gauss = json.loads(saved)
    live.load_state_dict({"rng": (version, tuple(internal), gauss)})


def pretokenized(model, n_tokens: int, batch_size: int = 32, seed: int = 0, n_ctx: int = 128,
                 progress: bool = True) -> TokenRows:
    """`store.corpus_token_batches(model, batch_size, seed, n_ctx)`'s stream with at least its first n_tokens
    made once (with a progress bar) and cached; a cache with fewer rows is extended, one made by another
    corpus or tokenizer is rebuilt. Returns an iterator of [batch_size, n_ctx] batches identical to the
    live stream's, endless like it."""
    from mechlib.sae.store import corpus_token_batches

    live = corpus_token_batches(model, batch_size, seed, n_ctx)
    n_ctx = live.n_ctx  # the model's context may be shorter
    n_rows = -(-n_tokens // n_ctx)
    path = cache_dir("tokens") / f"{tokenizer_fingerprint(model.tokenizer)}-seed{seed}-ctx{n_ctx}.safetensors"
    live.batch_size = 1
    first = next(live)[0].to(torch.int32)  # checks that a cache was made by this corpus and tokenizer
    rows, rng = first[None], _rng_state(live)
    try:
        with safe_open(str(path), "pt") as f:
            cached, saved_rng = f.get_tensor("rows"), f.metadata()["rng"]
        if torch.equal(cached[0], first):
            rows, rng = cached, saved_rng
    except Exception:  # noqa: BLE001  # no cache yet, or an unreadable one: make it
        pass
    if len(rows) < n_rows:
        _set_rng_state(live, rng)
        chunks, have = [rows], len(rows)
        with tqdm(total=n_rows * n_ctx, initial=have * n_ctx, desc="tokenizing the corpus (once)", unit="tok",
                  unit_scale=True, disable=not progress, mininterval=1) as bar:
            while have < n_rows:
                live.batch_size = min(256, n_rows - have)
                chunks.append(next(live).to(torch.int32))
                have += len(chunks[-1])
                bar.update(len(chunks[-1]) * n_ctx)
        rows, rng = torch.cat(chunks), _rng_state(live)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")  # the rows and the stream's state after them, in one file
        save_file({"rows": rows.contiguous()}, str(partial), metadata={"rng": rng})
        partial.replace(path)  # never a half-written cache, even if interrupted
    _set_rng_state(live, rng)  # past the cached rows (all of them: more than asked is the same stream), live
    live.batch_size = batch_size
    return TokenRows(rows, batch_size, live)
