"""How good is an SAE? Reconstruction (FVU), sparsity (L0, dead and dense latents, the density of every
latent), and what matters most: how much of the model's behaviour survives when the SAE's
reconstruction replaces the real activations (the loss increase in nats, KL, CE loss recovered)."""

from __future__ import annotations

import torch

from mechlib.sae.base import SAE, fvu
from mechlib.sae.store import cache_until, corpus_token_batches, real_tokens


def eval_tokens(model, n_batches: int = 8, batch_size: int = 32, seed: int = 12345) -> torch.Tensor:
    """Held-out corpus text for metrics (another seed than training's), on the model's device.  # [batch, seq]"""
    source = corpus_token_batches(model, batch_size, seed)
    return torch.cat([next(source) for _ in range(n_batches)]).to(model.cfg.device)


def prompt_tokens(model, held_out: bool = True, n_documents: int = 256, seed: int = 7) -> torch.Tensor:
    """Fact and IOI sentences, one document per row after BOS, right-padded with the end-of-text token (which
    real_tokens leaves out, as it does BOS). held_out: in phrasings training never saw (fact sentences in held-out
    phrasings, IOI sentences in held-out frames and with held-out names, in turn); else the same mix in the
    phrasings, frames and names training uses: the same kind of text, at the same positions.  # [n_documents, seq]"""
    from mechlib import corpus

    gen, tok = corpus.CorpusGenerator(seed), model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.eos_token_id if tok.eos_token_id is not None else bos
    makers = ((lambda: gen.fact(held_out=True), lambda: gen.ioi(held_out_frames=True),
               lambda: gen.ioi(names=corpus.NAMES_HELD_OUT)) if held_out else
              (lambda: gen.fact(), lambda: gen.ioi(), lambda: gen.ioi()))
    rows = [[bos] + tok(makers[i % 3]().text, add_special_tokens=False)["input_ids"] for i in range(n_documents)]
    width = max(map(len, rows))
    return torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=model.cfg.device)


@torch.no_grad()
def real_activations(model, hook_name: str, tokens: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """hook_name's activations at the real tokens (not BOS, padding or end-of-text) of tokens [batch, seq], a few
    rows at a time, stopping after the hook's block.  # [n, d_in]"""
    xs = []
    for chunk in tokens.to(model.cfg.device).split(rows):
        cache = cache_until(model, chunk, [hook_name])
        xs.append(cache[hook_name][real_tokens(model.tokenizer, chunk)].float())
    return torch.cat(xs)


@torch.no_grad()
def fvu_by_text(saes: dict[str, SAE], model, hook_name: str, texts: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """FVU of each SAE on each named token set [batch, seq], over real tokens only (no BOS, padding or
    end-of-text): does an SAE reconstruct text it was not trained on as well as its training text?"""
    out: dict[str, dict[str, float]] = {name: {} for name in saes}
    for text, tokens in texts.items():
        x = real_activations(model, hook_name, tokens)  # [n, d_in]
        for name, sae in saes.items():
            out[name][text] = float(fvu(x, sae.eval()(x.to(sae.W_dec.device))[0].to(x.device)))
    return out


@torch.no_grad()
def mean_activation(model, hook_name: str, tokens: torch.Tensor, rows: int = 32) -> torch.Tensor:
    """The mean of hook_name's activations over the real tokens (not BOS or padding) of tokens [batch, seq]: the
    replacement of mean ablation.  # [d_in]"""
    return real_activations(model, hook_name, tokens, rows).mean(0)


LOGITS_PER_CHUNK = 2 ** 26  # floats of logits held at once (256 MB): GPT-2's 50,257-token vocabulary needs chunks


@torch.no_grad()
def evaluate_saes(saes: dict[str, SAE], model, hook_name: str, tokens: torch.Tensor,
                  dense_above: float = 0.1, ce_rows: int | None = None) -> dict[str, dict[str, float | torch.Tensor]]:
    """Metrics of several SAEs on hook_name of a TransformerLens model over tokens [batch, seq]; the
    clean and ablated runs they are measured against are made once for all of them.

    BOS and padding positions are left as they are (the SAE never saw them in training) and are not
    counted. The main numbers: CE increase = CE spliced - CE clean (nats per token), and KL of the spliced
    next-token distribution from the clean one, per token. CE loss recovered = (CE ablated - CE spliced) /
    (CE ablated - CE clean) against two baselines: zero ablation (sae-lens's "CE loss recovered"; zeros are
    far off the activations' distribution, on the course model worse than a uniform guess) and mean ablation
    (every activation replaced by their mean over these tokens: "CE recovered vs mean"). A baseline sets the
    scale of "recovered" and neither is neutral, hence the increase and the KL.
    density [d_sae] is each latent's firing rate. Rows run a few at a time, so a large vocabulary fits in memory.
    ce_rows: measure the losses and the KL on the first ce_rows rows only (default all): each SAE costs a whole
    forward pass there, dominated by the unembedding on a large vocabulary; FVU, L0 and density use every row.
    """
    tokens = tokens.to(model.cfg.device)
    rows = max(1, LOGITS_PER_CHUNK // (tokens.shape[1] * model.cfg.d_vocab))
    mean_act = mean_activation(model, hook_name, tokens)  # [d_in]
    ce = dict.fromkeys(["clean", "zero", "mean", *saes], 0.0)  # summed over counted tokens
    kl = dict.fromkeys(saes, 0.0)
    # per SAE, summed as the chunks go (keeping every SAE's latents would take gigabytes at GPT-2's width):
    # squared error, active latents, and how often each latent fires
    xs, n_counted, last_x_hat = [], 0, {}
    sq_err, n_active = dict.fromkeys(saes, 0.0), dict.fromkeys(saes, 0.0)
    fired = {name: torch.zeros(sae.cfg.d_sae, device=tokens.device) for name, sae in saes.items()}

    def reconstruct(x: torch.Tensor) -> None:  # x [n, d_in]: every SAE's reconstruction and latents, counted
        xs.append(x)
        for name, sae in saes.items():
            x_hat, z = sae.eval()(x.to(sae.W_dec.device))  # the SAE may live on another device than the model
            x_hat, active = x_hat.to(x.device), (z > 0).to(x.device)  # [n, d_in], [n, d_sae]
            sq_err[name] += float((x - x_hat).double().pow(2).sum())
            n_active[name] += float(active.sum())
            fired[name] += active.sum(0)
            last_x_hat[name] = x_hat

    n_ce = len(tokens) if ce_rows is None else ce_rows
    for chunk in tokens[:n_ce].split(rows):  # [rows, seq]
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

        def log_probs(logits: torch.Tensor) -> torch.Tensor:  # [rows, seq-1, d_vocab]
            return logits[:, :-1].log_softmax(-1)

        def ce_sum(lp: torch.Tensor) -> float:
            return float(-lp.gather(-1, targets[..., None])[..., 0][counted].sum())

        n_counted += int(counted.sum())
        lp_clean = log_probs(clean_logits)
        del clean_logits
        ce["clean"] += ce_sum(lp_clean)
        ce["zero"] += ce_sum(log_probs(splice(torch.zeros_like(x))))
        ce["mean"] += ce_sum(log_probs(splice(mean_act.to(x.dtype).expand_as(x))))
        # KL(clean || spliced) = sum p log p - sum p log q; the first term is the same for every SAE
        p_clean = lp_clean.exp()  # [rows, seq-1, d_vocab]
        neg_entropy = torch.linalg.vecdot(p_clean, lp_clean)  # [rows, seq-1]
        reconstruct(x)
        for name in saes:
            lp_sae = log_probs(splice(last_x_hat[name]))
            ce[name] += ce_sum(lp_sae)
            kl[name] += float((neg_entropy - torch.linalg.vecdot(p_clean, lp_sae))[counted].sum())
    if n_ce < len(tokens):  # the other rows: reconstruction and sparsity only
        reconstruct(real_activations(model, hook_name, tokens[n_ce:]))
    ce_clean, ce_zero, ce_mean, x = ce["clean"] / n_counted, ce["zero"] / n_counted, ce["mean"] / n_counted, torch.cat(xs)
    variance = float((x - x.mean(0)).double().pow(2).sum())  # fvu's denominator
    results = {}
    for name in saes:
        ce_sae, density = ce[name] / n_counted, fired[name] / len(x)  # density [d_sae]
        results[name] = {"L0": n_active[name] / len(x), "FVU": sq_err[name] / variance, "CE clean": ce_clean, "CE with SAE": ce_sae,
                         "CE zero-ablated": ce_zero, "CE mean-ablated": ce_mean, "CE increase": ce_sae - ce_clean,
                         "CE loss recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean),
                         "CE recovered vs mean": (ce_mean - ce_sae) / (ce_mean - ce_clean),
                         "KL": kl[name] / n_counted, "dead": float((density == 0).float().mean()),
                         "dense": float((density > dense_above).float().mean()), "density": density.cpu()}
    return results


def evaluate_sae(sae: SAE, model, hook_name: str, tokens: torch.Tensor, dense_above: float = 0.1) -> dict[str, float | torch.Tensor]:
    """evaluate_saes for one SAE."""
    return evaluate_saes({"sae": sae}, model, hook_name, tokens, dense_above)["sae"]


COLUMNS = ("L0", "FVU", "CE increase", "KL", "CE recovered vs mean", "CE loss recovered", "dead", "dense")


def metrics_table(rows: dict[str, dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain-text table of evaluate_sae results, one row per SAE."""
    width = max([24] + [len(name) for name in rows])
    widths = [max(17, len(c)) for c in columns]
    out = [f"{'SAE':{width}} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for name, m in rows.items():
        out.append(f"{name:{width}} " + " ".join(f"{m[c]:{w}.3f}" for c, w in zip(columns, widths)))
    return "\n".join(out)
