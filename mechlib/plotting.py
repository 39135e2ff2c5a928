"""Plots the lessons share: heatmaps (head scores, patching maps), bar charts (attributions) and
attention patterns, static or browsable (static HTML/JS, and ipywidgets in a live kernel)."""

from __future__ import annotations

import html
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from mechlib.live_html import Browsable, iframe, page


def _numpy(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else x


def heatmap(values: torch.Tensor, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            title: str = "", centered: bool = True, ax=None, cbar_label: str = "", annotate: bool = False,
            limit: float | None = None):
    """A 2-D heatmap of values [rows, cols]; centred on 0 with a red/blue map unless centered=False.
    limit: the colour range, ±limit (default the largest |value|): give several maps one to compare them."""
    v = _numpy(values)
    if v.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D tensor [rows, cols], got shape {tuple(v.shape)}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1 + 0.5 * v.shape[1], 1 + 0.4 * v.shape[0]))
    if centered:
        lim = limit if limit is not None else (float(abs(v).max()) or 1.0)
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(v, cmap="viridis", aspect="auto", vmax=limit)
    for axis, labels, n in ((ax.set_yticks, row_labels, v.shape[0]), (ax.set_xticks, col_labels, v.shape[1])):
        if labels is not None:
            if len(labels) != n:
                raise ValueError(f"got {len(labels)} labels for {n} rows/columns")
            axis(range(n), labels)
    if col_labels is not None:
        plt.setp(ax.get_xticklabels(), rotation=90)
    if annotate:
        for (i, j), x in np.ndenumerate(v):
            ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def head_heatmap(values: torch.Tensor, title: str = "", **kwargs):
    """A [layer, head] heatmap with "L0".."H0" labels: head scores, patching results."""
    n_layers, n_heads = values.shape
    return heatmap(values, [f"L{l}" for l in range(n_layers)], [f"H{h}" for h in range(n_heads)], title,
                   **kwargs)


def bar(values: torch.Tensor, labels: Sequence[str], title: str = "", ylabel: str = "", ax=None):
    """A bar per component: direct logit attributions and the like."""
    v = _numpy(values)
    if len(v) != len(labels):
        raise ValueError(f"got {len(labels)} labels for {len(v)} values")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(6, 0.25 * len(v)), 3.5))
    ax.bar(range(len(v)), v, color=["tab:red" if x < 0 else "tab:blue" for x in v])
    ax.set_xticks(range(len(v)), labels, rotation=90)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def attention_pattern(pattern: torch.Tensor, tokens: Sequence[str], title: str = "", ax=None):
    """One head's attention [query, key] with the tokens on both axes (rows attend to columns)."""
    if pattern.shape != (len(tokens), len(tokens)):
        raise ValueError(f"pattern has shape {tuple(pattern.shape)} but there are {len(tokens)} tokens")
    fig = heatmap(pattern, list(tokens), list(tokens), title, centered=False, ax=ax, cbar_label="attention")
    fig.axes[0].set_xlabel("key (attended to)")
    fig.axes[0].set_ylabel("query")
    return fig


_ATTENTION_JS = """
const L = document.getElementById("layer"), H = document.getElementById("head");
const title = document.getElementById("title"), grid = document.getElementById("grid");
function draw() {
  const l = +L.value, h = +H.value, m = DATA.patterns[l][h], t = DATA.tokens;
  title.textContent = "L" + l + "H" + h;
  let rows = "<tr><th></th>" + t.map(x => "<th class='k'><div>" + x + "</div></th>").join("") + "</tr>";
  m.forEach((row, q) => { rows += "<tr><th class='q'>" + t[q] + "</th>" + row.map((v, k) =>
    "<td title='" + t[q] + " \u2192 " + t[k] + ": " + v.toFixed(3) + "' style='background:rgba(37,99,235," + v +
    ")'></td>").join("") + "</tr>"; });
  grid.innerHTML = rows;
}
L.addEventListener("input", draw); H.addEventListener("input", draw); draw();
"""
_ATTENTION_CSS = ("td{width:18px;height:18px;border:1px solid #eee}th{font-weight:normal;font-family:monospace;"
                  "white-space:pre}th.q{text-align:right;padding-right:4px}th.k div{writing-mode:vertical-rl;"
                  "transform:rotate(180deg)}#title{font-weight:bold;margin-left:1em}")


def attention_browser_html(patterns: torch.Tensor, tokens: Sequence[str]) -> str:
    """The attention browser as self-contained HTML/JS (sliders for layer and head, the pattern as a shaded grid,
    each cell's value on hover): no kernel, no CDN. patterns: [layer, head, query, key]."""
    n_layers, n_heads = patterns.shape[:2]
    data = {"patterns": np.round(_numpy(patterns), 3).tolist(), "tokens": [html.escape(t) for t in tokens]}
    body = (f'<label>layer <input type="range" id="layer" min="0" max="{n_layers - 1}" value="0"></label> '
            f'<label>head <input type="range" id="head" min="0" max="{n_heads - 1}" value="0"></label>'
            '<span id="title"></span><div style="font-size:11px;color:#555">rows: query (attending); columns: key '
            '(attended to); hover a cell for its value</div><table id="grid" style="border-collapse:collapse"></table>')
    return iframe(page(body, _ATTENTION_JS, data, _ATTENTION_CSS), height=110 + 24 * len(tokens) + 8 * max(map(len, tokens)))


def attention_browser(patterns: torch.Tensor, tokens: Sequence[str]) -> Browsable:
    """Browse every head's pattern with layer and head sliders. patterns: [layer, head, query, key].
    Displays as ipywidgets in a live kernel, as static HTML/JS (`attention_browser_html`) everywhere else."""
    if patterns.ndim != 4 or patterns.shape[2:] != (len(tokens), len(tokens)):
        raise ValueError(f"patterns must be [layer, head, query, key] with {len(tokens)} tokens on both of the last "
                         f"axes, got shape {tuple(patterns.shape)}")
    n_layers, n_heads = patterns.shape[:2]
    return Browsable(attention_browser_html(patterns, tokens), lambda: _attention_widget(patterns, tokens),
                     f"attention browser: {n_layers} layers x {n_heads} heads over {len(tokens)} tokens")


def _attention_widget(patterns: torch.Tensor, tokens: Sequence[str]):
    """The ipywidgets version: layer and head sliders redraw attention_pattern."""
    import ipywidgets as widgets
    from IPython.display import display

    n_layers, n_heads = patterns.shape[:2]
    out = widgets.Output()
    layer = widgets.IntSlider(0, 0, n_layers - 1, description="layer")
    head = widgets.IntSlider(0, 0, n_heads - 1, description="head")

    def draw(_=None):
        with out:
            out.clear_output(wait=True)
            fig = attention_pattern(patterns[layer.value, head.value], tokens, f"L{layer.value}H{head.value}")
            display(fig)
            plt.close(fig)

    layer.observe(draw, "value")
    head.observe(draw, "value")
    draw()
    return widgets.VBox([widgets.HBox([layer, head]), out])


# ---------------------------------------------------------------- toy models of superposition


def feature_directions(W: torch.Tensor, titles: Sequence[str], importance: torch.Tensor | None = None):
    """Each feature's direction in a 2-D hidden space, one panel per instance. W [instance, 2, feature].

    Darker arrows are more important features (importance [feature] or [instance, feature]).
    """
    W = _numpy(W)
    if W.ndim != 3 or W.shape[1] != 2:
        raise ValueError(f"feature_directions needs W [instance, 2, feature], got shape {tuple(W.shape)}")
    n_inst, _, n_feat = W.shape
    imp = np.ones((n_inst, n_feat)) if importance is None else np.broadcast_to(_numpy(importance), (n_inst, n_feat))
    fig, axes = plt.subplots(1, n_inst, figsize=(2.6 * n_inst, 2.8), squeeze=False)
    lim = 1.1 * max(float(np.abs(W).max()), 1.0)
    for ax, w, im, title in zip(axes[0], W, imp, titles):
        shade = 0.25 + 0.75 * im / im.max()
        for i in range(n_feat):
            ax.plot([0, w[0, i]], [0, w[1, i]], color=plt.cm.viridis(1 - shade[i]), linewidth=2)
            ax.scatter(w[0, i], w[1, i], color=plt.cm.viridis(1 - shade[i]), s=20)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def superposition_bars(norms: torch.Tensor, interference: torch.Tensor, titles: Sequence[str]):
    """The paper's feature bars: length ||W_i||, colour the interference from other features
    (black: a dimension of its own; yellow: superposed). norms, interference [instance, feature]."""
    norms, interference = _numpy(norms), _numpy(interference)
    n_inst, n_feat = norms.shape
    fig, axes = plt.subplots(1, n_inst, figsize=(2.2 * n_inst, 0.18 * n_feat + 1.2), sharey=True, squeeze=False)
    for ax, n, s, title in zip(axes[0], norms, interference, titles):
        ax.barh(range(n_feat), n, color=plt.cm.plasma(np.clip(s, 0, 1)))
        ax.set_xlim(0, max(1.2, float(norms.max()) * 1.05))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("||W_i||")
    axes[0][0].invert_yaxis()  # the axes share y: invert once, feature 0 on top
    axes[0][0].set_yticks(range(0, n_feat, max(1, n_feat // 10)))
    axes[0][0].set_ylabel("feature (by importance)")
    fig.tight_layout()
    return fig


def phase_diagram(phase: torch.Tensor, x: torch.Tensor, y: torch.Tensor, phases: Sequence[str],
                  xlabel: str = "", ylabel: str = "", title: str = ""):
    """A categorical map: phase [len(y), len(x)] of indices into phases, on log axes x and y."""
    from matplotlib.colors import ListedColormap

    phase, x, y = _numpy(phase), _numpy(x), _numpy(y)
    colours = ["#d9d9d9", "#4c72b0", "#dd8452", "#55a868"][: len(phases)]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.pcolormesh(_edges(x), _edges(y), phase, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(phases) - 0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours], labels=list(phases),
              loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.tight_layout()
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges, halfway (in log space) between log-spaced cell centres."""
    c = np.log(centres)
    mid = (c[1:] + c[:-1]) / 2
    return np.exp(np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]]))


def dimensionality_scatter(x: torch.Tensor, dims: torch.Tensor, d_star: torch.Tensor,
                           represented: torch.Tensor | None = None,
                           fractions: Sequence[float] = (1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3),
                           xlabel: str = "1 / (1 - S)"):
    """The paper's geometry plot: each feature's dimensionality (dots), D* (line), and reference fractions.

    x [instance] (log axis), dims [instance, feature], d_star [instance]. Only the features marked in
    represented [instance, feature] are drawn (default: those with a dimensionality above 0.05).
    """
    from fractions import Fraction

    x, dims, d_star = _numpy(x), _numpy(dims), _numpy(d_star)
    keep = dims > 0.05 if represented is None else _numpy(represented).astype(bool)
    if keep.shape != dims.shape:
        raise ValueError(f"represented has shape {keep.shape} but dims has {dims.shape}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for f in fractions:
        ax.axhline(f, color="grey", linewidth=0.5, linestyle=":")
        ax.text(x.max() * 1.05, f, str(Fraction(f).limit_denominator(10)), va="center", fontsize=8)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.03, 0.03, dims.shape))
    ax.scatter((x[:, None] * jitter)[keep], dims[keep], s=6, alpha=0.5, label="feature dimensionality D_i")
    ax.plot(x, d_star, color="black", marker="o", markersize=3, label="D* (dimensions per feature)")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def l0_fvu_scatter(metrics: dict[str, dict], groups: dict[str, str] | None = None, ax=None):
    """The sparsity-reconstruction trade-off of several SAEs: L0 (log axis) against FVU, one labelled
    point each; metrics {name: {"L0": ..., "FVU": ...}}, groups {name: legend group} sets the colours."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    groups = groups or {name: "" for name in metrics}
    for i, group in enumerate(dict.fromkeys(groups.values())):
        names = [n for n in metrics if groups.get(n) == group]
        ax.scatter([metrics[n]["L0"] for n in names], [metrics[n]["FVU"] for n in names], s=40,
                   marker="os^D"[i % 4], label=group or None)
        for n in names:
            ax.annotate(n, (metrics[n]["L0"], metrics[n]["FVU"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per token, log scale)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    ax.set_title("sparsity vs reconstruction: down and to the left is better")
    if any(groups.values()):
        ax.legend(fontsize=8)
    return ax


def density_histogram(densities: dict[str, torch.Tensor], ax=None):
    """The feature density histogram: log10 of each latent's firing rate, one outline per SAE; dead
    latents (density 0) are counted in the legend instead."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(-6, 0, 37)
    for name, d in densities.items():
        d = _numpy(d)
        ax.hist(np.log10(d[d > 0]), bins=bins, histtype="step", linewidth=1.5,
                label=f"{name} ({(d == 0).mean():.0%} dead)")
    ax.set_xlabel("log10(feature density): fraction of tokens on which the latent fires")
    ax.set_ylabel("latents")
    ax.legend(fontsize=8)
    return ax


def training_curves(histories: dict[str, list[dict]], keys: Sequence[str] = ("dead", "L0", "FVU")):
    """SAE training logs (Trainer.history) side by side: one panel per metric, one line per run."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, key in zip(np.atleast_1d(axes), keys):
        for name, rows in histories.items():
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name)
        ax.set_title("dead fraction" if key == "dead" else key)
        ax.set_xlabel("step")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def attribution_scatter(real: torch.Tensor, approx: torch.Tensor, labels: Sequence[str], n_labels: int = 4,
                        title: str = "", ax=None):
    """Attribution patching (y) against real activation patching (x), one point per patch, on the line y = x
    where the linear approximation holds; the n_labels points furthest from it are named."""
    x, y = _numpy(real).ravel(), _numpy(approx).ravel()
    if len(labels) != len(x):
        raise ValueError(f"got {len(labels)} labels for {len(x)} points")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x, y, s=18)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")
    for i in np.argsort(-np.abs(x - y))[:n_labels]:
        ax.annotate(labels[i], (x[i], y[i]), fontsize=8, xytext=(4, -10), textcoords="offset points")
    r = np.corrcoef(x, y)[0, 1]
    ax.set_xlabel("activation patching")
    ax.set_ylabel("attribution patching")
    ax.set_title(title or f"Pearson r = {r:.3f}")
    ax.legend(fontsize=8, loc="upper left")
    return ax
