"""Lesson 03's SAE runs, and a fair comparison of architectures.

Every run trains on the same in-memory activations (`lesson_activations`: the lesson's data, in the same
order), so differences come from the SAE, not the data. The comparison gives each architecture the same
width (8x) and the same tokens, tunes its learning rate and sparsity coefficient until its held-out L0 is
the target (TopK and BatchTopK set k instead), keeps the best FVU, and retrains the winners with two more
seeds, so that a difference smaller than the seed-to-seed spread is not read as a result.

    python -m mechlib.sae compare --model course --out data/saes/compare     # `make saes` runs it per model

It writes the winners (sae-lens format, 16-bit weights), the lesson's three remedy SAEs (16x, with their
training curves), a TopK SAE on the MLP's output of the same block, and `sweep.json`, every run's numbers.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mechlib.files import read_json
from mechlib.sae.base import SAE, SAEConfig, fvu, l0
from mechlib.sae.store import ActivationStore, InMemoryActivations, tokens_for
from mechlib.sae.training import Trainer, TrainConfig

BATCH, STEPS, HELD_OUT_BATCHES = 1024, 300, 32  # lesson 03: 300 steps of 1024 activations, 32k held out
COMPARED = ("standard", "april", "jumprelu", "topk", "batchtopk")
COEFFICIENT = {"standard": "l1_coefficient", "april": "l1_coefficient", "jumprelu": "l0_coefficient"}
START = {"standard": 1.0, "april": 2.0, "jumprelu": 0.3}  # first coefficients tried (from earlier runs)
LRS = (1e-3, 3e-3, 1e-2, 3e-2)
TARGET_L0, L0_TOLERANCE = 16, 0.1  # held-out L0 within 10% of 16 counts as matched
# The lesson's remedies: the reference SAE (16x, L1 0.5, lr 1e-2) plus one remedy each, and TopK at 3e-3
REMEDIES = {"+ resampling": dict(architecture="standard", l1_coefficient=0.5, lr=1e-2, remedy="resample"),
            "+ ghost grads": dict(architecture="standard", l1_coefficient=0.5, lr=1e-2, remedy="ghost_grads"),
            "TopK (k=16)": dict(architecture="topk", k=16, lr=3e-3, remedy="none")}
REMEDY_DIRS = {"+ resampling": "resampling", "+ ghost grads": "ghost-grads", "TopK (k=16)": "topk-16x"}


def lesson_activations(model, hook: str, steps: int = STEPS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(train [steps * BATCH, d_in], held_out [HELD_OUT_BATCHES * BATCH, d_in], scale): one ActivationStore's
    batches, normalised to mean norm sqrt(d_in), in the order training sees them. BOS is left out."""
    store = ActivationStore(model, hook, batch_size=BATCH, buffer_size=65536, normalize=True, seed=seed,
                            n_tokens=tokens_for(steps + HELD_OUT_BATCHES, BATCH))
    batches = [store.next_batch() for _ in tqdm(range(steps + HELD_OUT_BATCHES), desc="activations")]
    return torch.cat(batches[:steps]), torch.cat(batches[steps:]), store.scale


def train_on(sae: SAE, train: torch.Tensor, lr: float, remedy: str = "none", seed: int = 0,
             progress: bool = True) -> Trainer:
    """Train sae for one pass over `train` [n, d_in] in batches of BATCH, as lesson 03 does: dead after 100
    silent steps, remedies every 100 steps, a log row every 25."""
    steps = len(train) // BATCH
    trainer = Trainer(sae.to(train.device), InMemoryActivations(train, BATCH, seed=seed),
                      TrainConfig(steps=steps, lr=lr, remedy=remedy, dead_after=100, resample_every=100,
                                  log_every=25, seed=seed))
    trainer.run(progress=progress)
    return trainer


@torch.no_grad()
def held_out_stats(sae: SAE, held_out: torch.Tensor) -> dict[str, float]:
    """L0, FVU and the fraction of latents that never fire, on held-out activations [n, d_in]."""
    x_hat, z = sae.eval()(held_out)
    return {"L0": l0(z).item(), "FVU": fvu(held_out, x_hat).item(), "dead": ((z > 0).sum(0) == 0).float().mean().item()}


def train_remedy(name: str, train: torch.Tensor, metadata: dict, progress: bool = True) -> Trainer:
    """Lesson 03's remedy SAE `name` (a key of REMEDIES): 16x, trained by train_on from seed 0."""
    from mechlib.sae import make_sae

    settings = dict(REMEDIES[name])
    lr, remedy = settings.pop("lr"), settings.pop("remedy")
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(d_in=train.shape[1], d_sae=16 * train.shape[1], metadata=dict(metadata, remedy=remedy),
                             **settings))
    return train_on(sae, train, lr, remedy=remedy, progress=progress)


def _run(arch: str, coefficient: float | None, lr: float, seed: int, train, held_out, meta) -> tuple[SAE, dict]:
    from mechlib.sae import make_sae

    kwargs = {COEFFICIENT[arch]: coefficient} if arch in COEFFICIENT else {"k": TARGET_L0}
    if arch == "jumprelu":
        kwargs["threshold_init"] = 1.0  # a short run must start near where its thresholds end up
    torch.manual_seed(seed)
    sae = make_sae(SAEConfig(d_in=train.shape[1], d_sae=8 * train.shape[1], architecture=arch, seed=seed,
                             metadata=dict(meta), **kwargs))
    train_on(sae, train, lr, seed=seed, progress=False)
    row = {"architecture": arch, "lr": lr, "coefficient": coefficient, "seed": seed} | held_out_stats(sae, held_out)
    return sae, row


def matched(row: dict) -> bool:
    return abs(row["L0"] - TARGET_L0) <= L0_TOLERANCE * TARGET_L0


def tune(arch: str, lr: float, train, held_out, meta, start: float, max_runs: int = 6) -> list[tuple[SAE, dict]]:
    """Runs at one learning rate, moving the sparsity coefficient until the held-out L0 matches the target:
    a secant step in log L0 against log coefficient (L0 falls as the coefficient grows)."""
    runs = [_run(arch, start, lr, 0, train, held_out, meta)]
    while not matched(runs[-1][1]) and len(runs) < max_runs:
        (_, a), b = runs[-1], runs[-2][1] if len(runs) > 1 else None
        slope = -1.0
        if b is not None and a["coefficient"] != b["coefficient"] and a["L0"] > 0 and b["L0"] > 0:
            slope = min(-0.2, (math.log(a["L0"]) - math.log(b["L0"])) / (math.log(a["coefficient"]) - math.log(b["coefficient"])))
        step = (math.log(TARGET_L0) - math.log(max(a["L0"], 0.1))) / slope
        runs.append(_run(arch, a["coefficient"] * math.exp(max(-2.0, min(2.0, step))), lr, 0, train, held_out, meta))
    return runs


def compare(model, model_name: str, hook: str, out: str | Path, seeds: int = 3) -> dict:
    """Tune every architecture of COMPARED to L0 = TARGET_L0 at 8x on the lesson's activations, retrain each
    winner with `seeds` seeds, train the lesson's remedy SAEs, and save all of it under `out`."""
    from mechlib.sae.io import save_sae

    out = Path(out)
    start_time = time.perf_counter()
    train, held_out, scale = lesson_activations(model, hook)
    meta = {"model_name": model_name, "hook_name": hook, "training_tokens": len(train)}
    rows, winners = [], {}
    for arch in COMPARED:
        best = None
        for lr in tqdm(LRS, desc=arch):
            runs = tune(arch, lr, train, held_out, meta, START.get(arch)) if arch in COEFFICIENT else \
                [_run(arch, None, lr, 0, train, held_out, meta)]
            rows += [row for _, row in runs]
            ok = [(sae, row) for sae, row in runs if matched(row) or arch not in COEFFICIENT]
            for sae, row in ok:
                if best is None or row["FVU"] < best[1]["FVU"]:
                    best = (sae, row)
        if best is None:
            raise RuntimeError(f"{arch}: no run reached L0 {TARGET_L0} +- {L0_TOLERANCE:.0%}; see the rows: {rows}")
        sae, row = best
        row["winner"] = True
        again = [_run(arch, row["coefficient"], row["lr"], s, train, held_out, meta)[1] | {"repeat of winner": True}
                 for s in range(1, seeds)]
        rows += again
        repeats = [row] + again
        winners[arch] = {"lr": row["lr"], "coefficient": row["coefficient"],
                         "FVU": [r["FVU"] for r in repeats], "L0": [r["L0"] for r in repeats],
                         "dead": [r["dead"] for r in repeats]}
        sae.fold_input_scale(scale)
        save_sae(sae, out / f"L{hook.split('.')[1]}-{arch}-8x", dtype=torch.float16)
        print(f"{arch}: lr {row['lr']}, coefficient {row['coefficient']}, FVU {winners[arch]['FVU']}, "
              f"L0 {winners[arch]['L0']}")
    for name in REMEDIES:
        trainer = train_remedy(name, train, meta)
        trainer.sae.fold_input_scale(scale)
        path = save_sae(trainer.sae, out / "remedies" / REMEDY_DIRS[name], dtype=torch.float16)
        (path / "history.json").write_text(json.dumps(trainer.history) + "\n")
    mlp_out_sae(model, model_name, hook, winners["topk"]["lr"], out)
    summary = {"model": model_name, "hook": hook, "width": 8 * train.shape[1], "training_tokens": len(train),
               "held_out_tokens": len(held_out), "target_L0": TARGET_L0, "L0_tolerance": L0_TOLERANCE,
               "learning_rates": list(LRS), "seconds": round(time.perf_counter() - start_time),
               "winners": winners, "runs": rows}
    (out / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def mlp_out_sae(model, model_name: str, hook: str, lr: float, out: str | Path) -> Path:
    """The TopK 8x SAE (k = 16) on the output of the MLP of hook's block, trained like the residual one (same
    tokens, steps and learning rate), as the reference text trains its SAE on an MLP. Saved under `out`."""
    from mechlib.sae import make_sae
    from mechlib.sae.io import save_sae

    layer = hook.split(".")[1]
    mlp_hook = f"blocks.{layer}.hook_mlp_out"
    train, _, scale = lesson_activations(model, mlp_hook)
    torch.manual_seed(0)
    sae = make_sae(SAEConfig(d_in=train.shape[1], d_sae=8 * train.shape[1], architecture="topk", k=TARGET_L0,
                             metadata={"model_name": model_name, "hook_name": mlp_hook, "training_tokens": len(train)}))
    train_on(sae, train, lr)
    sae.fold_input_scale(scale)
    return save_sae(sae, Path(out) / f"L{layer}-mlp-out-topk-8x", dtype=torch.float16)


def load_history(path: str | Path) -> list[dict[str, float]]:
    """The training curve saved next to a remedy SAE (Trainer.history rows)."""
    path = Path(path) / "history.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `make saes` writes it with the SAE")
    return read_json(path)


def comparison_dir(model, model_name: str, hook: str) -> Path:
    """Where lesson 03's comparison for `model_name` lives: shipped for the course models (at their middle
    hook), else run by `compare` on first use (about 15 minutes on a 2-core CPU, minutes on a GPU) and cached."""
    from mechlib.loading import cache_dir
    from mechlib.sae.for_model import SHIPPED_FOR

    if model_name in SHIPPED_FOR:
        path = SHIPPED_FOR[model_name] / "compare"
        if not (path / "sweep.json").exists():
            raise FileNotFoundError(f"{path}/sweep.json is missing: restore it with `git checkout -- data/saes` or "
                                    "rerun the comparison with `make saes`")
        if read_json(path / "sweep.json")["hook"] != hook:  # a damaged file says so here, before the lesson reads it
            raise ValueError(f"the shipped comparison for {model_name} is for another hook than {hook!r}")
        return path
    path = cache_dir("saes") / model_name.replace("/", "--") / "compare" / hook
    if not (path / "sweep.json").exists():
        print(f"no SAE comparison for {model_name} at {hook} yet: running it once (it is cached in {path})")
        compare(model, model_name, hook, path)
    return path
