"""The SAE a lesson needs, for whichever model the lesson runs on.

    sae = sae_for(model, MODEL_NAME, "blocks.2.hook_resid_post")   # TopK, 8x, k = 16

For the two course models the SAEs are shipped (data/saes/ and data/saes/course-bpe/, made by `make saes`).
For any other model, an SAE trained for a course model would be wrong (another d_model, another residual
basis), so it is trained on first use with the same recipe as the shipped one, with a progress bar, and
cached in ~/.cache/mechlib/saes/ (or $MECHLIB_CACHE/saes/): the next run loads it.
"""

from __future__ import annotations

from pathlib import Path

from mechlib.loading import REPO_ROOT, cache_dir, model_device
from mechlib.sae.base import SAE

SHIPPED = REPO_ROOT / "data" / "saes"
SHIPPED_FOR = {"course": SHIPPED, "course-bpe": SHIPPED / "course-bpe"}  # model name -> its shipped SAEs
# the recipe of the shipped L2-topk-8x (see the Makefile's `saes` target)
RECIPE = dict(architecture="topk", k=16, expansion=8, steps=300, batch_size=4096, lr=3e-3, dead_after=50, seed=0)


def sae_path(model_name: str, hook: str) -> Path:
    """Where the TopK 8x SAE of `hook` for `model_name` is: shipped for the course models, else the cache."""
    layer = hook.split(".")[1] if hook.startswith("blocks.") else hook
    name = f"L{layer}-topk-8x" if hook.endswith("hook_resid_post") else f"{hook}-topk-8x"
    if model_name in SHIPPED_FOR:
        return SHIPPED_FOR[model_name] / name
    return cache_dir("saes") / model_name.replace("/", "--") / name


def sae_for(model, model_name: str, hook: str, progress: bool = True) -> SAE:
    """The TopK 8x SAE on `hook` of `model` (a TransformerLens bridge), loaded if it exists, else trained and cached.

    model_name names the weights (MODEL_NAME in a lesson): a file made for one model is never used for another.
    """
    from mechlib.sae import ActivationStore, SAEConfig, Trainer, TrainConfig, make_sae
    from mechlib.sae.io import load_sae, save_sae
    from mechlib.sae.store import tokens_for

    path = sae_path(model_name, hook)
    if path.exists():
        sae = load_sae(path, model, hook)
        if sae.cfg.metadata.get("model_name", model_name) != model_name:
            raise ValueError(f"{path} was trained for {sae.cfg.metadata['model_name']!r}, not {model_name!r}: "
                             f"delete it and run again to train one for this model")
        return sae
    if model_name in SHIPPED_FOR:
        raise FileNotFoundError(f"{path} is missing: restore it with `git checkout -- data/saes` or retrain the "
                                f"shipped SAEs with `make saes`")
    r = RECIPE
    print(f"no SAE for {model_name} at {hook} yet: training one ({r['steps']} steps of {r['batch_size']} tokens, "
          f"the shipped recipe); it is cached in {path}")
    store = ActivationStore(model, hook, batch_size=r["batch_size"], normalize=True, seed=r["seed"],
                            n_tokens=tokens_for(r["steps"], r["batch_size"]))  # tokenized once, cached
    cfg = SAEConfig(d_in=store.d_in, d_sae=r["expansion"] * store.d_in, architecture=r["architecture"], k=r["k"],
                    seed=r["seed"], metadata={"model_name": model_name, "hook_name": hook,
                                              "training_tokens": r["steps"] * r["batch_size"]})  # as `sae train` records
    sae = make_sae(cfg).to(store.device)
    Trainer(sae, store, TrainConfig(steps=r["steps"], lr=r["lr"], seed=r["seed"], dead_after=r["dead_after"])).run(
        progress=progress)
    sae.fold_input_scale(store.scale)
    save_sae(sae, path)
    return sae.to(model_device(model)).eval()
