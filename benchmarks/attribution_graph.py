"""How long one prompt's attribution graph takes on a CPU (issue target: at most 10 s on the 2-core machine).

    python benchmarks/attribution_graph.py [--models course course-bpe]

For each model, with its shipped transcoders: the graphs of lesson 08's three prompts (a fact, an IOI sentence, an
induction sequence), built with mechlib.attribution.attribute (targets batched down the batch dimension) and pruned;
and, side by side on the fact prompt, the same graph built one target per backward pass (batch_size=1), with the
largest difference between the two adjacency matrices: the speed-up is only worth having at equal results.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from mechlib import load_model
    from mechlib.attribution import attribute
    from mechlib.graph_pruning import prune
    from mechlib.prompts import repeated_tokens
    from mechlib.transcoders import transcoders_for

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["course", "course-bpe"])
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        model = load_model(name, device="cpu")
        tcs = transcoders_for(model, name)
        induction = repeated_tokens(model, batch=1, seq_len=8, seed=0)[0]  # BOS, 8 random tokens, the same 8
        prompts = {"fact": "The Eiffel Tower is in",
                   "IOI": "When Mary and John went to the store, John gave a drink to",
                   "induction": induction}
        attribute(model, tcs, prompts["fact"])  # warm-up
        for what, prompt in prompts.items():
            start = time.perf_counter()
            graph = attribute(model, tcs, prompt)
            built = time.perf_counter() - start
            kept = prune(graph)
            print(f"{name:10s} {what:9s} {graph.n_pos:3d} tokens, {graph.n_features:4d} active features, "
                  f"{len(graph.adjacency):4d} nodes: built in {built:5.2f} s (target <= 10 s), pruned to "
                  f"{int(kept.nodes.sum())} nodes / {int(kept.edges.sum())} edges in {time.perf_counter() - start - built:.2f} s")
        start = time.perf_counter()
        batched = attribute(model, tcs, prompts["fact"])
        t_batched = time.perf_counter() - start
        start = time.perf_counter()
        one_by_one = attribute(model, tcs, prompts["fact"], batch_size=1)
        t_one = time.perf_counter() - start
        diff = float((batched.adjacency - one_by_one.adjacency).abs().max() / batched.adjacency.abs().max())
        print(f"{name:10s} fact, {len(batched.adjacency)} nodes: batched {t_batched:.2f} s, one target per pass "
              f"{t_one:.2f} s ({t_one / t_batched:.1f}x slower); largest difference {diff:.1e} of the largest edge")


if __name__ == "__main__":
    main()
