"""How many threads should lesson 02's toy models use? Times a training step of each of the lesson's
toy-model workloads with 1 and with 2 threads, alternating, in one run.

    python benchmarks/toy_threads.py [--steps 200] [--repeats 3]

Prints milliseconds per step for each thread count and `ratio: N.NNx` (1 thread over 2 threads: above
1 means two threads are faster). Tiny tensors can be much slower on two threads (thread start-up and
spinning cost more than the arithmetic), and much slower still when another process is busy.
"""

from __future__ import annotations

import argparse
import time

import torch

from mechlib.toy_models import ToyConfig, ToyModel, train_toy_model

# (name, n_features, n_hidden, instances): the shapes lesson 02 trains (restarts count as instances)
WORKLOADS = [
    ("5 features in 2-D, 3 configs x 8 restarts", 5, 2, 24),
    ("20 features in 5-D, 6 sparsities", 20, 5, 6),
    ("phase diagram, 2 in 1-D, 49 configs x 6 restarts", 2, 1, 294),
    ("geometry, 100 in 10-D, 12 sparsities", 100, 10, 12),
]


def ms_per_step(n_features: int, n_hidden: int, instances: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    model = ToyModel(ToyConfig(n_features, n_hidden, instances), torch.full((instances,), 0.1), torch.ones(n_features))
    train_toy_model(model, steps=5, progress=False, eval_size=1024)  # warm-up
    start = time.perf_counter()
    train_toy_model(model, steps=steps, progress=False, eval_size=1024)
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"{'workload':52} {'1 thread':>10} {'2 threads':>10}")
    for name, n, m, inst in WORKLOADS:
        times = {1: [], 2: []}
        for _ in range(args.repeats):  # alternate, so that drift in machine load hits both alike
            for threads in (1, 2):
                times[threads].append(ms_per_step(n, m, inst, threads, args.steps))
        one, two = min(times[1]), min(times[2])
        print(f"{name:52} {one:8.2f}ms {two:8.2f}ms   ratio: {one / two:.2f}x")


if __name__ == "__main__":
    main()
