"""How good is an SAE? Reconstruction (FVU), sparsity (L0, dead and dense latents, the density of every
latent), and what matters most: how much of the model's behaviour survives when the SAE's
reconstruction replaces the real activations (CE loss recovered, KL)."""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE, fvu, l0
from mechlib.sae.store import corpus_token_batches, real_tokens


def eval_tokens(model, n_batches: int = 8, batch_size: int = 32, seed: int = 12345) -> torch.Tensor:
    """Held-out corpus text for metrics (another seed than training's), on the model's device.  # [batch, seq]"""
    source = corpus_token_batches(model, batch_size, seed)
    return torch.cat([next(source) for _ in range(n_batches)]).to(model.cfg.device)


LOGITS_PER_CHUNK = 2 ** 26  # floats of logits held at once (256 MB): GPT-2's 50,257-token vocabulary needs chunks


@torch.no_grad()
def evaluate_saes(saes: dict[str, SAE], model, hook_name: str, tokens: torch.Tensor,
                  dense_above: float = 0.1) -> dict[str, dict[str, float | torch.Tensor]]:
    """Metrics of several SAEs on hook_name of a TransformerLens model over tokens [batch, seq]; the
    clean and zero-ablated runs they are measured against are made once for all of them.

    BOS and padding positions are left as they are (the SAE never saw them in training) and are not
    counted. CE loss recovered = (CE zero-ablated - CE spliced) / (CE zero-ablated - CE clean): 1 is
    as good as the model, 0 as bad as replacing the activations by zeros. KL is of the spliced next-token
    distribution from the clean one, per token. density [d_sae] is each latent's firing rate.
    Rows are run a few at a time, so that a large vocabulary's logits fit in memory.
    """
    tokens = tokens.to(model.cfg.device)
    rows = max(1, LOGITS_PER_CHUNK // (tokens.shape[1] * model.cfg.d_vocab))
    ce = dict.fromkeys(["clean", "zero", *saes], 0.0)  # summed over counted tokens
    kl = dict.fromkeys(saes, 0.0)
    xs, x_hats, zs, n_counted = [], {name: [] for name in saes}, {name: [] for name in saes}, 0
    for chunk in tokens.split(rows):  # [rows, seq]
        keep = real_tokens(model.tokenizer, chunk)  # [rows, seq]
        clean_logits, cache = model.run_with_cache(chunk, names_filter=hook_name)
        x = cache[hook_name][keep].float()  # [n, d_in]

        def splice(replacement: torch.Tensor) -> torch.Tensor:
            def hook(act, hook):
                act = act.clone()
                act[keep] = replacement.to(act.dtype)
                return act
            return model.run_with_hooks(chunk, fwd_hooks=[(hook_name, hook)])

        targets, counted = chunk[:, 1:], keep[:, 1:]  # predictions of real tokens (not of padding)

        def ce_sum(logits: torch.Tensor) -> float:
            lp = logits[:, :-1].log_softmax(-1).gather(-1, targets[..., None])[..., 0]  # [rows, seq-1]
            return float(-lp[counted].sum())

        n_counted += int(counted.sum())
        ce["clean"] += ce_sum(clean_logits)
        ce["zero"] += ce_sum(splice(torch.zeros_like(x)))
        p_clean = clean_logits[:, :-1].log_softmax(-1)  # [rows, seq-1, d_vocab]
        xs.append(x)
        for name, sae in saes.items():
            x_hat, z = sae.eval()(x.to(sae.W_dec.device))  # the SAE may live on another device than the model
            x_hat, z = x_hat.to(x.device), z.to(x.device)
            sae_logits = splice(x_hat)
            ce[name] += ce_sum(sae_logits)
            p_sae = sae_logits[:, :-1].log_softmax(-1)
            kl[name] += float((p_clean.exp() * (p_clean - p_sae)).sum(-1)[counted].sum())
            x_hats[name].append(x_hat)
            zs[name].append(z)
    ce_clean, ce_zero, x = ce["clean"] / n_counted, ce["zero"] / n_counted, torch.cat(xs)
    results = {}
    for name in saes:
        x_hat, z, ce_sae = torch.cat(x_hats[name]), torch.cat(zs[name]), ce[name] / n_counted
        density = (z > 0).float().mean(0)  # [d_sae]
        results[name] = {"L0": float(l0(z)), "FVU": float(fvu(x, x_hat)), "CE clean": ce_clean, "CE with SAE": ce_sae,
                         "CE zero-ablated": ce_zero, "CE loss recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean),
                         "KL": kl[name] / n_counted, "dead": float((density == 0).float().mean()),
                         "dense": float((density > dense_above).float().mean()), "density": density.cpu()}
    return results


def evaluate_sae(sae: SAE, model, hook_name: str, tokens: torch.Tensor, dense_above: float = 0.1) -> dict[str, float | torch.Tensor]:
    """evaluate_saes for one SAE."""
    return evaluate_saes({"sae": sae}, model, hook_name, tokens, dense_above)["sae"]


def metrics_table(rows: dict[str, dict], columns: tuple[str, ...] = ("L0", "FVU", "CE loss recovered", "KL", "dead", "dense")) -> str:
    """A plain-text table of evaluate_sae results, one row per SAE."""
    width = max([24] + [len(name) for name in rows])
    out = [f"{'SAE':{width}} " + " ".join(f"{c:>17}" for c in columns)]
    for name, m in rows.items():
        out.append(f"{name:{width}} " + " ".join(f"{m[c]:17.3f}" for c in columns))
    return "\n".join(out)
