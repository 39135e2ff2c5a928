"""Where an SAE training run's time goes: making tokens, the model's forward pass, the SAE's steps.

    python benchmarks/sae_pipeline.py [--model course] [--device cpu|cuda] [--steps 60] [--repeats 2]

Trains lesson 03's SAE (TopK, k = 16, 8x, batch 4096, blocks.2.hook_resid_post, normalised) twice,
side by side in one run: from the live corpus stream (Python generates and tokenizes the text as
training goes), and from the same stream pre-tokenized once and cached on disk (`n_tokens=`, what
`make saes`, `sae_for` and lesson 03 use). Both read the same batches, so they train the same SAE:
the FVU printed for each shows it. For each it prints tokens/s and the split of the time between
producing tokens, the forward pass (with shuffling the buffer) and the SAE steps. On a GPU the SAE
should be bound by the GPU, not by Python: compare the split there.
"""

from __future__ import annotations

import argparse
import time

import torch


def synced(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


class TimedTokens:
    """Wraps a token iterator and adds up the seconds spent in it."""

    def __init__(self, tokens):
        self.tokens, self.seconds = tokens, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.tokens)
        self.seconds += time.perf_counter() - start
        return batch


def train(model, hook: str, steps: int, pretokenize: bool) -> dict:
    from mechlib.sae import ActivationStore, SAEConfig, Trainer, TrainConfig, fvu, make_sae
    from mechlib.sae.store import corpus_token_batches, tokens_for
    from mechlib.sae.tokens import pretokenized

    device = torch.device(model.cfg.device)
    sync = synced(device)
    n_tokens = tokens_for(steps + 8, 4096)
    source = pretokenized(model, n_tokens, progress=False) if pretokenize else corpus_token_batches(model)
    tokens = TimedTokens(source)
    store = ActivationStore(model, hook, batch_size=4096, buffer_size=65536, tokens=tokens, normalize=True)
    held_out = torch.cat([store.next_batch() for _ in range(2)])  # [8192, d_in]
    sae = make_sae(SAEConfig(d_in=store.d_in, d_sae=8 * store.d_in, architecture="topk", k=16)).to(device)
    trainer = Trainer(sae, store, TrainConfig(steps=steps, lr=3e-3, dead_after=50, log_every=10**9))
    produce = 0.0
    next_batch = trainer.next_batch

    def timed_batch():
        nonlocal produce
        sync()
        t = time.perf_counter()
        batch = next_batch()
        sync()
        produce += time.perf_counter() - t
        return batch

    trainer.next_batch = timed_batch
    tokens.seconds = 0.0
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    sync()
    total = time.perf_counter() - start
    with torch.no_grad():
        x_hat, _ = sae.eval()(held_out)
    return {"tokens_per_s": steps * 4096 / total, "total": total, "tokens": tokens.seconds,
            "forward": produce - tokens.seconds, "sae": total - produce,
            "fvu": fvu(held_out, x_hat).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="course")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--hook", default="blocks.2.hook_resid_post")
    p.add_argument("--repeats", type=int, default=2, help="runs of each, alternating; the best is printed")
    args = p.parse_args()
    from mechlib import load_model
    from mechlib.sae.store import tokens_for
    from mechlib.sae.tokens import pretokenized

    model = load_model(args.model, device=args.device)
    print(f"{args.model} on {args.device}: {args.steps} steps of 4096 activations, TopK 8x, {args.hook}")
    start = time.perf_counter()
    pretokenized(model, tokens_for(args.steps + 8, 4096))  # made once per machine (or loaded)
    print(f"pre-tokenizing {tokens_for(args.steps + 8, 4096):,} tokens (once, then cached): "
          f"{time.perf_counter() - start:.1f} s")
    print(f"{'source':13} {'tokens/s':>9} {'FVU':>6} | share of time: {'tokens':>7} {'forward':>8} {'SAE':>6}")
    runs = {"live": [], "pretokenized": []}
    for _ in range(args.repeats):  # alternating, so that neither gets the warm-up or a quieter machine
        for name in runs:
            runs[name].append(train(model, args.hook, args.steps, name == "pretokenized"))
    best = {name: max(r, key=lambda x: x["tokens_per_s"]) for name, r in runs.items()}
    for name, r in best.items():
        share = {k: r[k] / r["total"] for k in ("tokens", "forward", "sae")}
        print(f"{name:13} {r['tokens_per_s']:9,.0f} {r['fvu']:6.3f} | {share['tokens']:21.0%} {share['forward']:8.0%} "
              f"{share['sae']:6.0%}")
    print(f"speed-up from pre-tokenizing: {best['pretokenized']['tokens_per_s'] / best['live']['tokens_per_s']:.2f}x "
          f"at equal quality (FVU {best['pretokenized']['fvu']:.3f} vs {best['live']['fvu']:.3f}; the same batches)")


if __name__ == "__main__":
    main()
