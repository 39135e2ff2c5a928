"""What does a latent mean? The field's first looks at an SAE feature: the contexts where it fires
most (the token highlighted), the tokens its decoder direction promotes and suppresses through the
unembedding, the histogram of its activations, a browser over all of them, and a score against the
corpus's ground-truth concepts."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from mechlib.concepts import CONCEPTS, LabelledTokens, concept_scores, f1_score
from mechlib.sae.base import SAE
from mechlib.sae.store import cache_until


@torch.no_grad()
def latent_activations(sae: SAE, model, hook_name: str, tokens: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Every latent's activation at every position of tokens [batch, seq].  # [batch, seq, d_sae]"""
    sae.eval()
    out = []
    for start in range(0, len(tokens), chunk):
        cache = cache_until(model, tokens[start:start + chunk].to(model.cfg.device), [hook_name])
        out.append(sae.encode(cache[hook_name].float().to(sae.W_dec.device)).cpu())  # the SAE may be elsewhere
    return torch.cat(out)


@dataclass
class Context:
    activation: float
    tokens: list[str]  # the window around the token, as strings
    position: int  # the token's index in `tokens`
    acts: list[float]  # the latent's activation on each token of the window


def top_contexts(acts: torch.Tensor, tokens: torch.Tensor, latent: int, model, n: int = 8,
                 before: int = 8, after: int = 2) -> list[Context]:
    """The n positions where `latent` is largest, with a window of tokens around each.
    acts [batch, seq, d_sae] from latent_activations, tokens [batch, seq]."""
    a = acts[..., latent]  # [batch, seq]
    values, flat = a.flatten().topk(min(n, a.numel()))
    out = []
    for v, f in zip(values.tolist(), flat.tolist()):
        if v <= 0:
            break
        b, p = divmod(f, a.shape[1])
        lo, hi = max(0, p - before), min(a.shape[1], p + after + 1)
        out.append(Context(v, model.to_str_tokens(tokens[b, lo:hi]), p - lo, a[b, lo:hi].tolist()))
    return out


def contexts_html(contexts: list[Context]) -> str:
    """The contexts as HTML: each token shaded by the latent's activation, the top token boxed."""
    rows = []
    for c in contexts:
        peak = max(c.acts) or 1.0
        spans = []
        for i, (tok, a) in enumerate(zip(c.tokens, c.acts)):
            alpha = max(0.0, a / peak)
            style = f"background: rgba(255, 140, 0, {alpha:.2f});"
            if i == c.position:
                style += " border: 1px solid black; font-weight: bold;"
            spans.append(f'<span style="{style}">{html.escape(tok)}</span>')
        rows.append(f"<div style='font-family: monospace'>{c.activation:6.2f} &nbsp; {''.join(spans)}</div>")
    return "\n".join(rows) or "<i>this latent never fires on these tokens</i>"


@torch.no_grad()
def logit_effects(sae: SAE, model, latent: int, n: int = 8) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The tokens the latent's decoder direction pushes up and down most, W_dec[latent] @ W_U (the
    direct path, ignoring the final LayerNorm's scale). Returns (top, bottom) as (token, value) lists."""
    effect = sae.W_dec[latent].detach().to(model.W_U.device) @ model.W_U  # [d_vocab]
    top, bottom = effect.topk(n), (-effect).topk(n)
    tok = model.to_single_str_token if hasattr(model, "to_single_str_token") else None
    name = (lambda i: tok(int(i))) if tok else (lambda i: model.tokenizer.decode([int(i)]))
    return ([(name(i), v) for i, v in zip(top.indices, top.values.tolist())],
            [(name(i), -v) for i, v in zip(bottom.indices, bottom.values.tolist())])


def activation_histogram(acts: torch.Tensor, latent: int, ax=None):
    """The distribution of a latent's non-zero activations (acts [..., d_sae])."""
    import matplotlib.pyplot as plt

    a = acts[..., latent].flatten()
    a = a[a > 0]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 2.5))
    ax.hist(a.detach().cpu().numpy(), bins=40)
    ax.set_title(f"latent {latent}: fires on {len(a)} of {acts[..., latent].numel()} tokens")
    ax.set_xlabel("activation")
    fig.tight_layout()
    return fig


@dataclass
class ConceptMatch:
    concept: str  # the best-matching concept
    precision: float  # P(concept | latent fires)
    recall: float  # P(latent fires | concept)
    f1: float


def concept_matches(acts: torch.Tensor, labelled: LabelledTokens) -> list[ConceptMatch]:
    """Each latent's best-matching ground-truth concept (by F1 of "fires" as a detector of the concept).
    acts [batch, seq, d_sae] on labelled.tokens."""
    precision, recall = concept_scores(acts[labelled.mask] > 0, labelled.flat_concept)  # [d_sae, concept]
    f1 = f1_score(precision, recall)
    best = f1.argmax(-1)
    rows = torch.arange(len(best))
    return [ConceptMatch(CONCEPTS[c], p, r, f) for c, p, r, f in zip(
        best.tolist(), precision[rows, best].tolist(), recall[rows, best].tolist(), f1[rows, best].tolist())]


def concepts_found(matches: list[ConceptMatch], min_f1: float = 0.8) -> dict[str, ConceptMatch]:
    """For each concept some latent matches with F1 >= min_f1: its best latent's match."""
    found: dict[str, ConceptMatch] = {}
    for m in matches:
        if m.f1 >= min_f1 and (m.concept not in found or m.f1 > found[m.concept].f1):
            found[m.concept] = m
    return found


def feature_browser(sae: SAE, model, acts: torch.Tensor, tokens: torch.Tensor,
                    matches: list[ConceptMatch] | None = None):
    """Browse latents with a slider: top contexts, logit effects, histogram, and concept match."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    alive = (acts > 0).flatten(0, -2).any(0).nonzero().flatten().tolist()
    slider = widgets.SelectionSlider(options=alive or [0], description="latent")
    out = widgets.Output()

    def draw(_=None):
        latent = slider.value
        with out:
            out.clear_output(wait=True)
            top, bottom = logit_effects(sae, model, latent)
            text = [f"<b>latent {latent}</b>"]
            if matches is not None:
                m = matches[latent]
                text.append(f"best concept: <b>{m.concept}</b> (precision {m.precision:.2f}, recall {m.recall:.2f}, F1 {m.f1:.2f})")
            text.append("promotes: " + ", ".join(f"{html.escape(t)} ({v:+.2f})" for t, v in top[:6]))
            text.append("suppresses: " + ", ".join(f"{html.escape(t)} ({v:+.2f})" for t, v in bottom[:6]))
            display(HTML("<br>".join(text) + contexts_html(top_contexts(acts, tokens, latent, model))))
            fig = activation_histogram(acts, latent)
            display(fig)
            plt.close(fig)

    slider.observe(draw, "value")
    draw()
    return widgets.VBox([slider, out])
