"""mechlib's SAE trainer against sae-lens's, on identical activations, side by side in one run.

    python benchmarks/sae_throughput.py [--steps 100] [--repeats 2]

The activations are the course model's blocks.2.hook_resid_post (d_in = 128) on corpus text; both
trainers get the same batches in the same order (batch 4096, d_sae = 8 x 128, lr 1e-3, Adam, gradient norm
clipped at 1.0 as sae-lens always does) on the
CPU, for the standard (L1) and TopK (k = 16) architectures. Runs alternate between the two trainers,
each in a fresh process; sae-lens runs in its own virtual environment (benchmarks/.venv-saelens,
created on first use), because it needs TransformerLens < 4. Prints tokens per second for each, the
ratio (mechlib over sae-lens) as `ratio: N.NNx`, FVU on held-out activations after the same tokens,
and the share of this machine's measured matmul throughput each trainer reaches.

The two "standard" SAEs are not the same loss: sae-lens's weights its L1 penalty by decoder norms
(Anthropic's April 2024 update), mechlib's is the reference text's. Their FVUs are not comparable;
their speeds are. TopK is the same algorithm in both.
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


def collect_activations(path: Path, n_train: int, n_held_out: int) -> None:
    from mechlib import load_model
    from mechlib.sae import ActivationStore

    model = load_model("course", device="cpu")
    store = ActivationStore(model, "blocks.2.hook_resid_post", batch_size=4096, buffer_size=65536)
    acts = torch.cat([store.next_batch() for _ in range((n_train + n_held_out) // 4096 + 1)])
    save_file({"train": acts[:n_train].contiguous(), "held_out": acts[n_train:n_train + n_held_out].contiguous()},
              str(path))


def matmul_flops() -> float:
    """This machine's float32 matmul throughput on the SAE's shapes, FLOP/s."""
    a, b = torch.randn(4096, 128), torch.randn(128, 1024)
    for _ in range(3):
        a @ b
    start, n = time.perf_counter(), 50
    for _ in range(n):
        a @ b
    return n * 2 * 4096 * 128 * 1024 / (time.perf_counter() - start)


def run(python: Path, backend: str, arch: str, acts: Path, steps: int) -> dict:
    out = subprocess.run([str(python), str(WORKER), backend, arch, str(acts), str(steps)], check=True,
                         capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="timed steps per run (after 3 warm-up steps)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    sl_python = saelens_python()
    acts = Path("/tmp/mechlib-sae-benchmark-acts.safetensors")
    collect_activations(acts, n_train=64 * 4096, n_held_out=8192)
    peak = matmul_flops()
    work = 12 * 128 * 1024  # dense-equivalent FLOPs a token: 2 matmuls forward, 4 backward, 2 FLOPs a MAC
    print(f"matmul throughput here: {peak / 1e9:.1f} GFLOP/s; {args.steps} steps x 4096 tokens per run, "
          f"best of {args.repeats} alternating runs")
    for arch in ("standard", "topk"):
        results = {"mechlib": [], "saelens": []}
        for _ in range(args.repeats):
            for backend, python in (("mechlib", Path(sys.executable)), ("saelens", sl_python)):
                results[backend].append(run(python, backend, arch, acts, args.steps))
        best = {b: max(r, key=lambda x: x["tokens_per_s"]) for b, r in results.items()}
        for b in ("mechlib", "saelens"):
            r = best[b]
            print(f"{arch:8} {b:8} {r['tokens_per_s']:10,.0f} tokens/s  FVU {r['fvu']:.3f}  "
                  f"{r['tokens_per_s'] * work / peak:.0%} of matmul throughput")
        print(f"{arch:8} ratio: {best['mechlib']['tokens_per_s'] / best['saelens']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
