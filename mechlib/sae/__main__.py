"""The instructor's command: train an SAE on one hook of a model, save it, print its metrics.

    python -m mechlib.sae train --hook blocks.2.hook_resid_post --architecture topk --k 16 --out data/saes/L2-topk
    python -m mechlib.sae evaluate data/saes/L2-topk
    python -m mechlib.sae toy      # TopK at the true k on synthetic data with known features
    python -m mechlib.sae compare --out data/saes/compare   # lesson 03's architecture comparison

The model is the course model unless --model names another (a local directory, or a hub id when
online). Metrics are measured on fresh corpus text, with the SAE spliced into the model.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from mechlib import load_model
    from mechlib.sae import ActivationStore, SAEConfig, Trainer, TrainConfig, make_sae
    from mechlib.sae.io import load_sae, save_sae
    from mechlib.sae.metrics import eval_tokens, evaluate_sae, evaluate_saes, metrics_table
    from mechlib.sae.store import tokens_for

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
    t.add_argument("--threshold-init", type=float, default=0.001,
                   help="initial threshold (jumprelu); short runs need one near the final value")
    t.add_argument("--remedy", default="none", help="none | resample | ghost_grads")
    t.add_argument("--dead-after", type=int, default=200,
                   help="steps without firing after which a latent counts as dead (and AuxK/remedies act on it)")
    t.add_argument("--clip-grad-norm", type=float, default=None, help="clip the gradient norm (sae-lens uses 1.0)")
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
    c = sub.add_parser("compare", help="lesson 03's runs: architectures tuned to one L0 at 8x, and the remedies")
    c.add_argument("--model", default="course")
    c.add_argument("--hook", default="blocks.2.hook_resid_post")
    c.add_argument("--out", required=True, help="directory to write the winners, the remedies and sweep.json")
    y = sub.add_parser("toy", help="recover known features: 512 in 256 dims, ~5 active; prints MMCS")
    y.add_argument("--steps", type=int, default=600)
    y.add_argument("--architecture", default="topk")
    args = p.parse_args(argv)

    if args.command == "train":
        torch.manual_seed(args.seed)
        model = load_model(args.model, device=args.device)
        store = ActivationStore(model, args.hook, batch_size=args.batch_size, normalize=args.normalize,
                                seed=args.seed, n_tokens=tokens_for(args.steps, args.batch_size))
        cfg = SAEConfig(d_in=store.d_in, d_sae=args.expansion * store.d_in, architecture=args.architecture,
                        k=args.k, l1_coefficient=args.l1, l0_coefficient=args.l0, threshold_init=args.threshold_init,
                        seed=args.seed,
                        metadata={"model_name": args.model, "hook_name": args.hook})
        sae = make_sae(cfg).to(store.device)
        start = time.perf_counter()
        Trainer(sae, store, TrainConfig(steps=args.steps, lr=args.lr, remedy=args.remedy, seed=args.seed,
                                            dead_after=args.dead_after, clip_grad_norm=args.clip_grad_norm)).run()
        seconds = time.perf_counter() - start
        sae.fold_input_scale(store.scale)
        cfg.metadata.update(training_tokens=args.steps * args.batch_size, training_seconds=round(seconds, 1),
                            remedy=args.remedy)
        save_sae(sae, args.out)
        m = evaluate_sae(sae, model, args.hook, eval_tokens(model))
        print(f"trained in {seconds:.1f} s ({args.steps * args.batch_size / seconds:,.0f} tokens/s); saved to {args.out}")
        print(metrics_table({args.out.rstrip('/').split('/')[-1]: m}))
        return 0
    if args.command == "compare":
        from mechlib.sae.compare import compare

        compare(load_model(args.model), args.model, args.hook, args.out)
        return 0
    if args.command == "toy":
        from mechlib.sae.toy_data import recover_known_features

        start = time.perf_counter()
        r = recover_known_features(args.architecture, args.steps)
        print(f"{args.architecture}, k = 5, {args.steps} steps of 2048 ({time.perf_counter() - start:.1f} s): "
              f"mean max cosine similarity {r['MMCS']:.3f} (target >= 0.95; {r['MMCS before']:.3f} at the start), "
              f"L0 {r['L0']:.2f}, FVU {r['FVU']:.3f}")
        return 0
    model = load_model(args.model)
    by_hook: dict[str, dict] = {}  # SAEs of one hook share the clean and zero-ablated runs
    for path in args.paths:
        sae = load_sae(path, model, args.hook)
        by_hook.setdefault(args.hook or sae.cfg.metadata["hook_name"], {})[path.rstrip("/").split("/")[-1]] = sae
    tokens = eval_tokens(model)
    rows = {name: m for hook, saes in by_hook.items() for name, m in evaluate_saes(saes, model, hook, tokens).items()}
    print(metrics_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
