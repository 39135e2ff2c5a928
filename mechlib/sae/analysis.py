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
            style = f"background: rgba(255, 140, 0, {alpha:.2f}); margin-right: 3px;"
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


def _latent_header(sae: SAE, model, latent: int, matches: list[ConceptMatch] | None) -> str:
    """The browser's summary of a latent: its concept match and the tokens its decoder promotes and suppresses."""
    top, bottom = logit_effects(sae, model, latent)
    text = [f"<b>latent {latent}</b>"]
    if matches is not None:
        m = matches[latent]
        text.append(f"best concept: <b>{m.concept}</b> (precision {m.precision:.2f}, recall {m.recall:.2f}, F1 {m.f1:.2f})")
    text.append("promotes: " + ", ".join(f"{html.escape(t)} ({v:+.2f})" for t, v in top[:6]))
    text.append("suppresses: " + ", ".join(f"{html.escape(t)} ({v:+.2f})" for t, v in bottom[:6]))
    return "<br>".join(text)


_BROWSER_JS = """
const S = document.getElementById("latent"), out = document.getElementById("out");
const esc = s => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
function draw() {
  const d = DATA.latents[+S.value];
  if (!d) { out.innerHTML = "<i>no latent fires on these tokens</i>"; return; }
  let h = d.header + "<div style='margin:6px 0'>";
  d.contexts.forEach(c => { const peak = Math.max(...c.acts) || 1;
    h += "<div class='ctx'>" + c.activation.toFixed(2) + " &nbsp; " + c.tokens.map((t, i) => "<span style='background:" +
      "rgba(255,140,0," + Math.max(0, c.acts[i] / peak).toFixed(2) + ")" + (i === c.position ? ";border:1px solid black;" +
      "font-weight:bold" : "") + "'>" + esc(t) + "</span>").join("") + "</div>"; });
  if (!d.contexts.length) h += "<i>this latent never fires on these tokens</i>";
  const top = Math.max(...d.hist, 1), w = 300 / d.hist.length;
  h += "</div><svg width='320' height='90'>" + d.hist.map((n, i) => "<rect x='" + (10 + i * w) + "' y='" + (70 - 60 * n / top) +
    "' width='" + (w - 1) + "' height='" + (60 * n / top) + "' fill='#2563eb'/>").join("") + "<text x='10' y='85' font-size='10'>" +
    d.lo.toFixed(2) + "</text><text x='310' y='85' font-size='10' text-anchor='end'>" + d.hi.toFixed(2) + "</text></svg>" +
    "<div style='font-size:11px'>activations where it fires: fires on " + d.fires + " of " + DATA.n_tokens + " tokens</div>";
  out.innerHTML = h;
}
S.addEventListener("input", draw); draw();
"""


def feature_browser_html(sae: SAE, model, acts: torch.Tensor, tokens: torch.Tensor,
                         matches: list[ConceptMatch] | None = None, latents: int = 40) -> str:
    """The feature browser as self-contained HTML/JS (no kernel, no CDN) for `latents` latents: those with the best
    concept match (with `matches`), else those that fire most; each with its top contexts, logit effects and a
    histogram of its activations."""
    from mechlib.live_html import iframe, page

    fires = (acts > 0).flatten(0, -2).sum(0)  # [d_sae]
    alive = fires.nonzero().flatten()
    score = torch.tensor([matches[i].f1 for i in alive.tolist()]) if matches is not None else fires[alive].float()
    chosen = alive[score.argsort(descending=True, stable=True)[:latents]].tolist()
    entries = []
    for latent in chosen:
        a = acts[..., latent].flatten()
        a = a[a > 0]
        hist = torch.histc(a.float(), bins=30, min=float(a.min()), max=float(a.max()))
        entries.append({"header": _latent_header(sae, model, latent, matches), "fires": int(fires[latent]),
                        "hist": hist.int().tolist(), "lo": float(a.min()), "hi": float(a.max()),
                        "contexts": [{"activation": round(c.activation, 3), "tokens": c.tokens, "position": c.position,
                                      "acts": [round(x, 3) for x in c.acts]}
                                     for c in top_contexts(acts, tokens, latent, model)]})
    which = "best concept match" if matches is not None else "most tokens fired on"
    body = (f'<label>latent <input type="range" id="latent" min="0" max="{max(len(chosen) - 1, 0)}" value="0"></label>'
            f' <span style="font-size:11px;color:#555">{len(chosen)} of {len(alive)} live latents (those with the '
            f'{which}); run the notebook to browse them all</span><div id="out"></div>')
    return iframe(page(body, _BROWSER_JS, {"latents": entries, "n_tokens": int(acts[..., 0].numel())},
                       ".ctx{font-family:monospace;white-space:pre}.ctx span{margin-right:3px}"), height=460)


def feature_browser(sae: SAE, model, acts: torch.Tensor, tokens: torch.Tensor,
                    matches: list[ConceptMatch] | None = None):
    """Browse latents with a slider: top contexts, logit effects, histogram, and concept match. Displays as
    ipywidgets (every live latent) in a live kernel, as static HTML/JS (`feature_browser_html`) everywhere else."""
    from mechlib.live_html import Browsable

    n_alive = int((acts > 0).flatten(0, -2).any(0).sum())
    return Browsable(feature_browser_html(sae, model, acts, tokens, matches),
                     lambda: _feature_widget(sae, model, acts, tokens, matches),
                     f"feature browser over {n_alive} live latents")


def _feature_widget(sae: SAE, model, acts: torch.Tensor, tokens: torch.Tensor, matches: list[ConceptMatch] | None):
    """The ipywidgets version: a slider over every live latent redraws its summary, contexts and histogram."""
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
            display(HTML(_latent_header(sae, model, latent, matches)
                         + contexts_html(top_contexts(acts, tokens, latent, model))))
            fig = activation_histogram(acts, latent)
            display(fig)
            plt.close(fig)

    slider.observe(draw, "value")
    draw()
    return widgets.VBox([slider, out])
