"""mechlib's SAE trainer against sae-lens's, at equal quality, side by side in one run.

    python benchmarks/sae_throughput.py [--steps 300] [--repeats 2]

The activations are the course model's blocks.2.hook_resid_post (d_in = 128) on corpus text. Both
trainers train the same recipe: the same loss, the same initial weights (decoder rows of length 0.1,
the encoder its transpose, as sae-lens initialises them), the same batches in the same order (batch
4096, d_sae = 8 x 128), Adam at lr 1e-3, the gradient's norm clipped at 1.0 as sae-lens always does, on
the CPU. Two architectures: sae-lens's "standard" SAE, which is Anthropic's April 2024 update
(L1 weighted by decoder norms; mechlib's `april`), and TopK (k = 16). Runs alternate between the two
trainers, each in a fresh process; sae-lens runs in its own virtual environment
(benchmarks/.venv-saelens, created on first use), because it needs TransformerLens < 4.

Prints, for each: tokens per second, FVU and L0 on held-out activations after the same steps, and the
training time each needed to reach the same FVU (the worse of the two final FVUs), with the ratio
(sae-lens's time over mechlib's) as `time to equal FVU: N.NNx`, and the share of this machine's measured
matmul throughput each trainer reaches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-saelens"
WORKER = HERE / "_sae_worker.py"
SAE_LENS = "sae-lens==6.54.0"


def saelens_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {SAE_LENS} (once; needs the package index) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", SAE_LENS], check=True)
    return python


def collect_activations(path: Path, n_train: int, n_held_out: int, d_sae: int) -> None:
    from mechlib import load_model
    from mechlib.sae import ActivationStore

    model = load_model("course", device="cpu")
    store = ActivationStore(model, "blocks.2.hook_resid_post", batch_size=4096, buffer_size=65536)
    acts = torch.cat([store.next_batch() for _ in range((n_train + n_held_out) // 4096 + 1)])
    directions = torch.nn.functional.normalize(torch.randn(d_sae, acts.shape[1],
                                                           generator=torch.Generator().manual_seed(0)), dim=-1)
    save_file({"train": acts[:n_train].contiguous(), "held_out": acts[n_train:n_train + n_held_out].contiguous(),
               "directions": directions}, str(path))


def matmul_flops() -> float:
    """This machine's float32 matmul throughput on the SAE's shapes, FLOP/s."""
    a, b = torch.randn(4096, 128), torch.randn(128, 1024)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 50
    for _ in range(n):
        a @ b
    return n * 2 * 4096 * 128 * 1024 / (time.perf_counter() - start)


def run(python: Path, backend: str, arch: str, acts: Path, steps: int, every: int) -> dict:
    out = subprocess.run([str(python), str(WORKER), backend, arch, str(acts), str(steps), str(every)], check=True,
                         capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seconds_to(curve: list[dict], target: float) -> float:
    """Training seconds until the held-out FVU first reached target (inf if never)."""
    return next((c["seconds"] for c in curve if c["fvu"] <= target), float("inf"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--every", type=int, default=10, help="steps between held-out evaluations")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    sl_python = saelens_python()
    acts = Path("/tmp/mechlib-sae-benchmark-acts.safetensors")
    collect_activations(acts, n_train=64 * 4096, n_held_out=8192, d_sae=8 * 128)
    peak = matmul_flops()
    work = 12 * 128 * 1024  # dense-equivalent FLOPs a token: 2 matmuls forward, 4 backward, 2 FLOPs a MAC
    print(f"matmul throughput here: {peak / 1e9:.1f} GFLOP/s; {args.steps} steps x 4096 tokens per run, "
          f"best of {args.repeats} alternating runs")
    for arch, saelens_name in (("april", "standard (April update)"), ("topk", "topk")):
        results = {"mechlib": [], "saelens": []}
        for _ in range(args.repeats):
            for backend, python in (("mechlib", Path(sys.executable)), ("saelens", sl_python)):
                results[backend].append(run(python, backend, arch, acts, args.steps, args.every))
        best = {b: max(r, key=lambda x: x["tokens_per_s"]) for b, r in results.items()}
        target = max(best[b]["curve"][-1]["fvu"] for b in best)
        print(f"{arch} (sae-lens: {saelens_name}); time to FVU {target:.3f}, the worse of the two final FVUs:")
        for b in ("mechlib", "saelens"):
            r, last = best[b], best[b]["curve"][-1]
            print(f"  {b:8} {r['tokens_per_s']:9,.0f} tokens/s  FVU {last['fvu']:.3f}  L0 {last['l0']:5.1f}  "
                  f"{seconds_to(r['curve'], target):6.1f} s to FVU {target:.3f}  "
                  f"{r['tokens_per_s'] * work / peak:.0%} of matmul throughput")
        ratio = seconds_to(best["saelens"]["curve"], target) / seconds_to(best["mechlib"]["curve"], target)
        print(f"  {arch} time to equal FVU: {ratio:.2f}x (sae-lens / mechlib); tokens/s ratio "
              f"{best['mechlib']['tokens_per_s'] / best['saelens']['tokens_per_s']:.2f}x")

if __name__ == "__main__":
    main()
