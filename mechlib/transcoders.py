"""Per-layer transcoders, and the replacement model they make.

A transcoder reads an MLP's input (`blocks.L.mlp.hook_in`, after the LayerNorm) and writes an estimate of its
output (`blocks.L.hook_mlp_out`) through a few active latents (Dunefsky et al. 2024). Where an SAE explains
what a layer *holds*, a transcoder explains what a layer *computes*, and it does so linearly in its latents:
the step that makes attribution graphs possible (Ameisen et al. 2025, lesson 08).

    tcs = transcoders_for(model, MODEL_NAME)               # one per layer: shipped, else trained and cached
    model.run_with_hooks(tokens, fwd_hooks=splice(model, tcs, tokens))  # the replacement model: every MLP replaced
    replacement_metrics(model, tcs, eval_tokens(model))    # per-layer fidelity; CE increase, top-1 agreement

The architecture is the SAEs' (mechlib.sae, SAEConfig.d_out), trained by the one SAE trainer. We train one
transcoder per layer, not a cross-layer transcoder: per-layer transcoders train independently (minutes
each here), and their graphs have one node per feature per layer, which is simpler to read; a cross-layer
transcoder, whose features write into every later layer, makes smaller graphs with fewer error nodes in
large models (Ameisen et al. 2025), a gain these four-layer models do not need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from mechlib.loading import REPO_ROOT, cache_dir, model_device
from mechlib.sae.base import SAE, fvu

SHIPPED = REPO_ROOT / "data" / "transcoders"
SHIPPED_FOR = ("course", "course-bpe")
# The recipe of the shipped transcoders (`make transcoders`): skip transcoders, TopK, 8x, k = 16, AuxK for dead latents.
RECIPE = dict(architecture="topk", skip=True, k=16, expansion=8, steps=600, batch_size=4096, buffer_size=65536, lr=2e-3,
              dead_after=50, seed=0)


def hooks(layer: int) -> tuple[str, str]:
    """The hooks a layer's transcoder reads and imitates: the MLP's input (after ln2) and its output."""
    return f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"


def transcoder_path(model_name: str, layer: int) -> Path:
    """Where layer `layer`'s transcoder for `model_name` is: shipped for the course models, else the cache."""
    root = SHIPPED / model_name if model_name in SHIPPED_FOR else cache_dir("transcoders") / model_name.replace("/", "--")
    return root / f"L{layer}"


def train_transcoder(model, model_name: str, layer: int, progress: bool = True, **recipe) -> SAE:
    """Train layer `layer`'s transcoder on the course corpus with RECIPE (overridden by `recipe`)."""
    from mechlib.sae import ActivationStore, SAEConfig, Trainer, TrainConfig, make_sae
    from mechlib.sae.store import tokens_for

    r = {**RECIPE, **recipe}
    source, target = hooks(layer)
    store = ActivationStore(model, source, target=target, batch_size=r["batch_size"], seed=r["seed"] + layer,
                            buffer_size=r["buffer_size"], n_tokens=tokens_for(r["steps"], r["batch_size"], r["buffer_size"]))
    d_out = store.buffer.shape[1] - store.d_in
    cfg = SAEConfig(d_in=store.d_in, d_out=d_out, d_sae=r["expansion"] * store.d_in, architecture=r["architecture"],
                    k=r["k"], skip=r["skip"], seed=r["seed"] + layer,
                    metadata={"model_name": model_name, "hook_name": source, "target_hook_name": target})
    tc = make_sae(cfg).to(store.device)
    Trainer(tc, store, TrainConfig(steps=r["steps"], lr=r["lr"], seed=r["seed"], dead_after=r["dead_after"])).run(
        progress=progress)
    cfg.metadata.update(training_tokens=r["steps"] * r["batch_size"])
    return tc.eval()


def transcoders_for(model, model_name: str, progress: bool = True) -> list[SAE]:
    """One transcoder per layer of `model` (a TransformerLens bridge): loaded if it exists, else trained and cached.

    model_name names the weights (MODEL_NAME in a lesson): a file made for one model is never used for another."""
    from mechlib.sae.io import load_sae, save_sae

    out = []
    for layer in range(model.cfg.n_layers):
        path = transcoder_path(model_name, layer)
        if path.exists():
            tc = load_sae(path, model, hooks(layer)[0])
            if not tc.transcoder or tc.cfg.metadata.get("model_name", model_name) != model_name:
                raise ValueError(f"{path} is not a transcoder for {model_name!r} (it says "
                                 f"{tc.cfg.metadata.get('model_name')!r}): delete it and run again to train one")
            out.append(tc.eval())
            continue
        if model_name in SHIPPED_FOR:
            raise FileNotFoundError(f"{path} is missing: restore it with `git checkout -- data/transcoders` or "
                                    f"retrain the shipped transcoders with `make transcoders`")
        if layer == 0:
            print(f"no transcoders for {model_name} yet: training one per layer ({RECIPE['steps']} steps of "
                  f"{RECIPE['batch_size']} tokens each, the shipped recipe); they are cached in {path.parent}")
        tc = train_transcoder(model, model_name, layer, progress)
        save_sae(tc, path)
        out.append(tc)
    device = model_device(model)
    return [tc.to(device) for tc in out]


def text_positions(model, tokens: torch.Tensor) -> torch.Tensor:
    """[batch, pos] bool: the positions transcoders read and write (not BOS, end-of-text or padding). They were
    trained on text; BOS's activations, the same in every prompt and far larger, are not text."""
    from mechlib.sae.store import real_tokens

    return real_tokens(model.tokenizer, tokens)


def splice(model, transcoders: Sequence[SAE], tokens: torch.Tensor, layers: Sequence[int] | None = None,
           errors: Sequence[torch.Tensor] | None = None,
           edit: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> list:
    """Forward hooks for a run of `model` on `tokens` [batch, pos] that replace each MLP's output (of `layers`,
    default all) by its transcoder's estimate, computed from the MLP's input in the same run: the replacement
    model. Positions that are not text (text_positions) keep the real output. Use with `model.hooks(...)` or
    `run_with_hooks(fwd_hooks=...)`.

    errors: per layer, what the transcoder misses on this prompt ([pos, d_model], attribution.clean_run), added back
    so that the untouched run is the real one (the local replacement model). edit(layer, z): changes the latents
    z [batch, pos, d_sae] before they are decoded (an intervention on features)."""
    layers = range(len(transcoders)) if layers is None else layers
    text = text_positions(model, tokens).to(model_device(model))[..., None]  # [batch, pos, 1]
    inputs: dict[int, torch.Tensor] = {}

    def read(layer: int):
        def hook(act: torch.Tensor, hook=None) -> None:  # [batch, pos, d_model]
            inputs[layer] = act

        return hook

    def write(layer: int):
        def hook(act: torch.Tensor, hook=None) -> torch.Tensor:  # [batch, pos, d_model]
            tc, x = transcoders[layer], inputs.pop(layer).float()
            z = tc.encode(x) if edit is None else edit(layer, tc.encode(x))  # [batch, pos, d_sae]
            y = tc.decode(z) + tc.skip_connection(x) + (0.0 if errors is None else errors[layer])
            return torch.where(text, y.to(act.dtype), act)

        return hook

    return [h for L in layers for h in ((hooks(L)[0], read(L)), (hooks(L)[1], write(L)))]


@torch.no_grad()
def replacement_metrics(model, transcoders: Sequence[SAE], tokens: torch.Tensor, rows: int = 16) -> dict:
    """How faithful are the transcoders, one at a time and all together?

    Per layer, on the real model's own MLP inputs: FVU of the MLP output, L0, dead fraction (latents that never
    fire on `tokens`). The replacement model (every MLP replaced): next-token CE against the real model's and
    against the model with every MLP's output zeroed (for scale), the share of that gap the transcoders recover,
    and top-1 agreement with the real model's predictions. Over real tokens only (no BOS, padding, end-of-text)."""
    from mechlib.sae.store import real_tokens

    n_layers = len(transcoders)
    names = [h for L in range(n_layers) for h in hooks(L)]
    sums = dict.fromkeys(("ce", "ce_replaced", "ce_zero", "agree", "n"), 0.0)
    layer_x, layer_y = [[] for _ in range(n_layers)], [[] for _ in range(n_layers)]
    zero = [(hooks(L)[1], lambda act, hook: torch.zeros_like(act)) for L in range(n_layers)]
    for chunk in tokens.to(model_device(model)).split(rows):
        real = real_tokens(model.tokenizer, chunk)[:, 1:]  # [batch, seq-1]: predicted tokens that are real
        target = chunk[:, 1:]
        logits, cache = model.run_with_cache(chunk, names_filter=names)
        for L in range(n_layers):
            keep = real_tokens(model.tokenizer, chunk)
            layer_x[L].append(cache[hooks(L)[0]][keep])
            layer_y[L].append(cache[hooks(L)[1]][keep])
        replaced = model.run_with_hooks(chunk, fwd_hooks=splice(model, transcoders, chunk))
        zeroed = model.run_with_hooks(chunk, fwd_hooks=zero)
        for key, out in (("ce", logits), ("ce_replaced", replaced), ("ce_zero", zeroed)):
            lp = out[:, :-1].float().log_softmax(-1).gather(-1, target[..., None])[..., 0]  # [batch, seq-1]
            sums[key] -= float(lp[real].sum())
        sums["agree"] += float((logits[:, :-1].argmax(-1) == replaced[:, :-1].argmax(-1))[real].sum())
        sums["n"] += int(real.sum())
    per_layer = []
    for L, tc in enumerate(transcoders):
        x, y = torch.cat(layer_x[L]), torch.cat(layer_y[L])  # [n, d_model] each
        y_hat, z = tc(x)
        per_layer.append({"layer": L, "fvu": float(fvu(y, y_hat)), "l0": float((z > 0).sum(-1).float().mean()),
                          "dead": float(((z > 0).sum(0) == 0).float().mean())})
    n = int(sums["n"])
    ce, ce_rep, ce_zero = sums["ce"] / n, sums["ce_replaced"] / n, sums["ce_zero"] / n
    return {"layers": per_layer, "ce": ce, "ce_replaced": ce_rep, "ce_zero_mlps": ce_zero,
            "ce_increase": ce_rep - ce, "ce_recovered": (ce_zero - ce_rep) / (ce_zero - ce),
            "top1_agreement": sums["agree"] / n, "tokens": n}


def metrics_table(m: dict) -> str:
    """replacement_metrics as a few printed lines."""
    rows = [f"layer {r['layer']}: FVU of the MLP output {r['fvu']:.3f}, L0 {r['l0']:.1f}, dead {r['dead']:.1%}"
            for r in m["layers"]]
    rows.append(f"replacement model (every MLP replaced): CE {m['ce']:.3f} -> {m['ce_replaced']:.3f} nats "
                f"(+{m['ce_increase']:.3f}; zeroing every MLP: {m['ce_zero_mlps']:.3f}), {m['ce_recovered']:.1%} of "
                f"the zeroing's loss recovered, top-1 agreement {m['top1_agreement']:.1%} over {m['tokens']:,} tokens")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m mechlib.transcoders --model course`: retrain a model's shipped transcoders, print their metrics."""
    import argparse
    import time

    from mechlib import load_model
    from mechlib.sae.io import save_sae
    from mechlib.sae.metrics import eval_tokens

    p = argparse.ArgumentParser(prog="python -m mechlib.transcoders", description=main.__doc__)
    p.add_argument("--model", default="course")
    p.add_argument("--steps", type=int, default=RECIPE["steps"])
    p.add_argument("--layers", type=int, nargs="+", default=None, help="retrain only these layers (default: all)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(args.model, device="cpu")
    tcs = []
    for layer in args.layers if args.layers is not None else range(model.cfg.n_layers):
        start = time.perf_counter()
        tcs.append(train_transcoder(model, args.model, layer, steps=args.steps))
        tcs[-1].cfg.metadata.update(training_seconds=round(time.perf_counter() - start, 1))
        save_sae(tcs[-1], transcoder_path(args.model, layer), dtype=torch.float16)  # half the bytes to clone
        print(f"layer {layer}: trained in {time.perf_counter() - start:.0f} s, saved to "
              f"{transcoder_path(args.model, layer)}", flush=True)
    shipped = transcoders_for(model, args.model)  # as learners get them: read back from the float16 files
    print(metrics_table(replacement_metrics(model, shipped, eval_tokens(model))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
