"""Plots the lessons share: heatmaps (head scores, patching maps), bar charts (attributions) and
attention patterns, static or browsable with ipywidgets."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def _numpy(x):
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else x


def heatmap(values: torch.Tensor, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
            title: str = "", centered: bool = True, ax=None, cbar_label: str = "", annotate: bool = False):
    """A 2-D heatmap of values [rows, cols]; centred on 0 with a red/blue map unless centered=False."""
    v = _numpy(values)
    if v.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D tensor [rows, cols], got shape {tuple(v.shape)}")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1 + 0.5 * v.shape[1], 1 + 0.4 * v.shape[0]))
    if centered:
        lim = float(abs(v).max()) or 1.0
        im = ax.imshow(v, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(v, cmap="viridis", aspect="auto")
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


def attention_browser(patterns: torch.Tensor, tokens: Sequence[str]):
    """Browse every head's pattern with layer and head sliders. patterns: [layer, head, query, key]."""
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
