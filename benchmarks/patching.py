"""Batched activation patching against the reference text's per-head loop, side by side in one run.

    python benchmarks/patching.py [--repeats 30]

1. Speed: the all-heads sweep (patch each head's output over all positions, denoising) on the course model
   and the reference text's example ("The Eiffel Tower is in", corrupted to a landmark in Rome with as many
   tokens), timed alternately: mechlib.patching.patch_sweep (every head one batch row, one forward pass)
   against mechlib.patching.head_patching_loop (the reference text's loop, one forward pass per head).
   Prints the median time of each, the largest difference between their results and `ratio: N.NNx`. The
   same comparison on 20 IOI prompts follows: there each loop pass already runs a batch of 20, so
   batching gains less.
2. Attribution patching against real patching over the IOI head sweep (outputs, queries, keys, values
   of all 16 heads; denoising; symmetric and ABC corruptions): Pearson r.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mechlib import load_model
from mechlib.components import run_cache
from mechlib.patching import attribution_patch, head_patching_loop, logit_diff, normalized, patch, patch_sweep
from mechlib.prompts import answer_ids, ioi_prompts, to_tokens


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def race(model, clean: torch.Tensor, corrupted: torch.Tensor, metric, repeats: int, label: str) -> float:
    """Alternate the loop and the batched sweep; print medians, the largest difference and the ratio."""
    _, clean_cache = run_cache(model, clean)
    loop_times, batch_times, diff = [], [], 0.0
    for i in range(repeats + 2):  # the first two of each warm up
        t_loop, by_loop = timed(lambda: head_patching_loop(model, corrupted, clean_cache, metric))
        t_batch, batched = timed(lambda: patch_sweep(model, corrupted, clean_cache, metric, "head_out"))
        diff = max(diff, (by_loop - batched).abs().max().item())
        if i >= 2:
            loop_times.append(t_loop)
            batch_times.append(t_batch)
    loop, batch = statistics.median(loop_times), statistics.median(batch_times)
    print(f"{label}: {model.cfg.n_layers * model.cfg.n_heads} heads, {clean.shape[0]} prompt(s) of "
          f"{clean.shape[1]} tokens, median of {repeats} alternating runs")
    print(f"  per-head loop (reference text)  {loop * 1e3:8.1f} ms")
    print(f"  batched (mechlib.patching)      {batch * 1e3:8.1f} ms")
    print(f"  largest difference between the results: {diff:.1e}")
    return loop / batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load_model("course", device="cpu")
    print(f"course model on the CPU, {torch.get_num_threads()} threads")

    clean, corrupted = to_tokens(model, "The Eiffel Tower is in"), to_tokens(model, "The Trevi Fountain is in")
    clean_logits, _ = run_cache(model, clean, names=[])
    corrupted_logits, _ = run_cache(model, corrupted, names=[])
    metric = normalized(logit_diff(answer_ids(model, " Paris"), answer_ids(model, " Rome")), clean_logits,
                        corrupted_logits)
    ratio = race(model, clean, corrupted, metric, args.repeats, "Eiffel Tower -> Paris (the reference text's sweep)")
    print(f"ratio: {ratio:.2f}x  (goal >= 10x)\n")

    pairs = ioi_prompts(model, 20, corruption="s2_io")
    clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
    ld = logit_diff(answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs))
    metric = normalized(ld, run_cache(model, clean, names=[])[0], run_cache(model, corrupted, names=[])[0])
    ratio = race(model, clean, corrupted, metric, max(3, args.repeats // 3), "IOI")
    print(f"  IOI ratio {ratio:.2f}x\n")

    print("attribution patching vs activation patching, IOI head sweep (denoising, 20 prompts, template 0):")
    for corruption in ("s2_io", "abc"):
        pairs = ioi_prompts(model, 20, corruption=corruption)
        clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
        ld = logit_diff(answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs))
        metric = normalized(ld, run_cache(model, clean, names=[])[0], run_cache(model, corrupted, names=[])[0])
        real, approx = [], []
        for comp in ("head_out", "q", "k", "v"):
            real.append(patch(model, clean, corrupted, metric, comp).flatten())
            approx.append(attribution_patch(model, clean, corrupted, metric, comp).flatten())
        r = torch.corrcoef(torch.stack([torch.cat(real), torch.cat(approx)]))[0, 1].item()
        worst = (torch.cat(real) - torch.cat(approx)).abs().max().item()
        print(f"  {corruption:5s}: {len(torch.cat(real))} patches, pearson r: {r:.3f}  (goal >= 0.9), "
              f"largest gap {worst:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
