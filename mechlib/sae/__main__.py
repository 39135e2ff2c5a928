"""The instructor's command: train an SAE on one hook of a model, save it, print its metrics.

    python -m mechlib.sae train --hook blocks.2.hook_resid_post --architecture topk --k 16 --out data/saes/L2-topk
    python -m mechlib.sae evaluate data/saes/L2-topk

The model is the course model unless --model names another (a local directory, or a hub id when
online). Metrics are measured on fresh corpus text, with the SAE spliced into the model.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _metrics_table(rows: dict[str, dict]) -> str:
    cols = ["L0", "FVU", "CE loss recovered", "KL", "dead", "dense"]
    out = [f"{'SAE':24} " + " ".join(f"{c:>17}" for c in cols)]
    for name, m in rows.items():
        out.append(f"{name:24} " + " ".join(f"{m[c]:17.3f}" for c in cols))
    return "\n".join(out)


def eval_tokens(model, n_batches: int = 8, batch_size: int = 32, seed: int = 12345) -> torch.Tensor:
    """Held-out corpus text for metrics (another seed than training's).  # [batch, seq]"""
    from mechlib.sae.store import corpus_token_batches

    source = corpus_token_batches(model, batch_size, seed)
    return torch.cat([next(source) for _ in range(n_batches)])


def main(argv: list[str] | None = None) -> int:
    from mechlib import load_model
    from mechlib.sae import ActivationStore, SAEConfig, Trainer, TrainConfig, make_sae
    from mechlib.sae.io import load_sae, save_sae
    from mechlib.sae.metrics import evaluate_sae

    p = argparse.ArgumentParser(prog="python -m mechlib.sae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, save and evaluate an SAE")
    t.add_argument("--model", default="course")
    t.add_argument("--hook", required=True, help="a TransformerLens hook name, e.g. blocks.2.hook_resid_post")
    t.add_argument("--architecture", default="topk", help="standard | april | topk | batchtopk | jumprelu")
    t.add_argument("--expansion", type=int, default=8, help="d_sae = expansion x d_in")
    t.add_argument("--k", type=int, default=16)
    t.add_argument("--l1", type=float, default=1.0, help="L1 coefficient (standard, april)")
    t.add_argument("--l0", type=float, default=1.0, help="L0 coefficient (jumprelu)")
    t.add_argument("--remedy", default="none", help="none | resample | ghost_grads")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch-size", type=int, default=4096)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--normalize", action="store_true", help="scale activations to mean norm sqrt(d_in)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None)
    t.add_argument("--out", required=True, help="directory to write (sae-lens format)")
    e = sub.add_parser("evaluate", help="print the metrics of saved SAEs")
    e.add_argument("paths", nargs="+")
    e.add_argument("--model", default="course")
    e.add_argument("--hook", default=None, help="default: the hook in each SAE's metadata")
    args = p.parse_args(argv)

    if args.command == "train":
        torch.manual_seed(args.seed)
        model = load_model(args.model, device=args.device)
        store = ActivationStore(model, args.hook, batch_size=args.batch_size, normalize=args.normalize,
                                seed=args.seed)
        cfg = SAEConfig(d_in=store.d_in, d_sae=args.expansion * store.d_in, architecture=args.architecture,
                        k=args.k, l1_coefficient=args.l1, l0_coefficient=args.l0, seed=args.seed,
                        metadata={"model_name": args.model, "hook_name": args.hook})
        sae = make_sae(cfg).to(store.device)
        start = time.perf_counter()
        Trainer(sae, store, TrainConfig(steps=args.steps, lr=args.lr, remedy=args.remedy, seed=args.seed)).run()
        seconds = time.perf_counter() - start
        sae.fold_input_scale(store.scale)
        cfg.metadata.update(training_tokens=args.steps * args.batch_size, training_seconds=round(seconds, 1),
                            remedy=args.remedy)
        save_sae(sae, args.out)
        m = evaluate_sae(sae, model, args.hook, eval_tokens(model))
        print(f"trained in {seconds:.1f} s ({args.steps * args.batch_size / seconds:,.0f} tokens/s); saved to {args.out}")
        print(_metrics_table({args.out.rstrip('/').split('/')[-1]: m}))
        return 0
    model = load_model(args.model)
    rows = {}
    for path in args.paths:
        sae = load_sae(path, model, args.hook)
        rows[path.rstrip("/").split("/")[-1]] = evaluate_sae(sae, model, args.hook or sae.cfg.metadata["hook_name"],
                                                              eval_tokens(model))
    print(_metrics_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
