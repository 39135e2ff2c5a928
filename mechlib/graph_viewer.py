"""Looking at an attribution graph: an interactive, self-contained HTML figure (inline SVG and a few lines of
JavaScript: no CDN, works offline, in a notebook, in exported HTML and on a static site), a static matplotlib
figure for readers without JavaScript, and the JSON that circuit-tracer's viewer (and Neuronpedia's) reads.

    show(graph, kept)                         # in a notebook: the interactive figure
    plot_graph(graph, kept)                   # the static one
    save_circuit_tracer_json(graph, kept, "graph.json", slug="eiffel")

Layout, as in circuit-tracer's viewer: one column per token position, one row per layer (embeddings at the bottom,
logits at the top); a node's area grows with its influence; blue edges excite, red edges inhibit.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch

from mechlib.attribution import Graph
from mechlib.graph_pruning import Pruned
from mechlib.live_html import iframe, script_json


def _row(graph: Graph, node: int) -> int:
    """0: embeddings; 1 + layer: features and errors of a layer; n_layers + 1: logits."""
    if node < graph.n_features:
        return 1 + int(graph.features[node, 0])
    if node < graph.errors.stop:
        return 1 + (node - graph.errors.start) // graph.n_pos
    return 0 if node < graph.embeddings.stop else graph.n_layers + 1


def _kind(graph: Graph, node: int) -> str:
    if node < graph.n_features:
        return "feature"
    if node < graph.errors.stop:
        return "error"
    return "embedding" if node < graph.embeddings.stop else "logit"


def layout(graph: Graph, kept: Pruned) -> dict:
    """Kept nodes and edges with positions in [0, 1] x [0, 1], the data both figures draw."""
    nodes = kept.nodes.nonzero()[:, 0].tolist()
    cells: dict[tuple[int, int], list[int]] = {}
    for n in nodes:
        cells.setdefault((_row(graph, n), graph.position(n)), []).append(n)
    where = {}
    for (row, pos), members in cells.items():
        members.sort(key=lambda n: -float(kept.influence[n]))
        for i, n in enumerate(members):
            spread = 0.8 / graph.n_pos
            dx = 0 if len(members) == 1 else spread * (i / (len(members) - 1) - 0.5)
            where[n] = ((pos + 0.5) / graph.n_pos + dx, row / (graph.n_layers + 1))
    infl = kept.influence / kept.influence.max().clamp(min=1e-10)
    node_list = [{"id": n, "label": graph.label(n), "kind": _kind(graph, n), "x": where[n][0], "y": where[n][1],
                  "influence": round(float(kept.influence[n]), 4),
                  "size": 0.6 if _kind(graph, n) == "logit" else round(float(infl[n]) ** 0.5, 3),
                  "activation": (round(float(graph.activations[n]), 3) if n < graph.n_features else None)}
                 for n in nodes]
    targets, sources = kept.edges.nonzero(as_tuple=True)
    weights = graph.adjacency[targets, sources]
    scale = float(weights.abs().max()) if len(weights) else 1.0
    edges = [{"source": int(s), "target": int(t), "weight": round(float(w), 4), "width": round(abs(float(w)) / scale, 3)}
             for t, s, w in zip(targets.tolist(), sources.tolist(), weights.tolist())]
    edges.sort(key=lambda e: -e["width"])
    return {"prompt": graph.prompt, "tokens": graph.tokens, "n_layers": graph.n_layers, "nodes": node_list,
            "edges": edges}


_PAGE = """<div class="agv" id="ID" style="font:12px sans-serif;max-width:900px">
<div><b>PROMPT</b> &nbsp; edges shown: <input type="range" min="1" max="NEDGES" value="SHOWN" class="agv-slider">
<span class="agv-count"></span> &nbsp; <span style="color:#2563eb">&#9632; excites</span>
<span style="color:#dc2626">&#9632; inhibits</span></div>
<svg viewBox="-60 -20 960 SVGH" width="100%" style="background:#fff"></svg>
<div class="agv-info" style="min-height:3em;white-space:pre-wrap">Click a node to see its strongest inputs and outputs.</div>
</div>
<script>
(function () {
  const data = DATA, root = document.getElementById("ID"), svg = root.querySelector("svg");
  const info = root.querySelector(".agv-info"), slider = root.querySelector(".agv-slider");
  const count = root.querySelector(".agv-count"), NS = "http://www.w3.org/2000/svg";
  const W = 840, H = HEIGHT, byId = {};
  const px = n => n.x * W, py = n => H - n.y * H;
  data.nodes.forEach(n => byId[n.id] = n);
  const colours = {embedding: "#9ca3af", feature: "#f59e0b", error: "#d1d5db", logit: "#10b981"};
  let selected = null;
  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(e); return e;
  }
  data.tokens.forEach((t, i) => { const x = (i + 0.5) / data.tokens.length * W;
    el("text", {x: x, y: H + 16, "text-anchor": "middle", "font-size": 11}).textContent = t; });
  for (let r = 0; r <= data.n_layers + 1; r++) {
    const name = r == 0 ? "emb" : r == data.n_layers + 1 ? "logit" : "L" + (r - 1);
    el("text", {x: -55, y: H - r / (data.n_layers + 1) * H + 4, "font-size": 11}).textContent = name; }
  const edgeLayer = el("g", {}), nodeLayer = el("g", {});
  function draw() {
    const shown = +slider.value; count.textContent = shown + " of " + data.edges.length;
    edgeLayer.innerHTML = "";
    data.edges.slice(0, shown).forEach(e => {
      const s = byId[e.source], t = byId[e.target];
      const on = selected === null || e.source === selected || e.target === selected;
      el("line", {x1: px(s), y1: py(s), x2: px(t), y2: py(t), stroke: e.weight > 0 ? "#2563eb" : "#dc2626",
        "stroke-width": 0.5 + 4 * e.width, opacity: on ? 0.75 : 0.08, class: "agv-edge"}, edgeLayer); });
  }
  data.nodes.forEach(n => {
    const r = 4 + 9 * n.size, attrs = {fill: colours[n.kind], stroke: "#111", "stroke-width": 0.5, class: "agv-node",
      "data-id": n.id, cursor: "pointer"};
    const shape = n.kind === "error" ? el("rect", Object.assign({x: px(n) - r, y: py(n) - r, width: 2 * r, height: 2 * r}, attrs), nodeLayer)
                                     : el("circle", Object.assign({cx: px(n), cy: py(n), r: r}, attrs), nodeLayer);
    el("title", {}, shape).textContent = n.label + "\\ninfluence " + n.influence + (n.activation === null ? "" : "\\nactivation " + n.activation);
    shape.addEventListener("click", () => {
      selected = selected === n.id ? null : n.id; draw();
      if (selected === null) { info.textContent = "Click a node to see its strongest inputs and outputs."; return; }
      const ins = data.edges.filter(e => e.target === n.id).slice(0, 5).map(e => "  " + byId[e.source].label + "  " + e.weight);
      const outs = data.edges.filter(e => e.source === n.id).slice(0, 5).map(e => "  " + byId[e.target].label + "  " + e.weight);
      info.textContent = n.label + " (influence " + n.influence + ")\\ninputs:\\n" + (ins.join("\\n") || "  none") +
        "\\noutputs:\\n" + (outs.join("\\n") || "  none");
    });
  });
  slider.addEventListener("input", draw); draw();
})();
</script>"""


def to_html(graph: Graph, kept: Pruned, element_id: str = "attribution-graph", edges_shown: int = 150) -> str:
    """The interactive figure as one self-contained HTML fragment (a div and a script)."""
    data = layout(graph, kept)
    height = 90 * (graph.n_layers + 2)
    n_edges = max(1, len(data["edges"]))
    # the text last, so that no placeholder name inside the prompt or the data is replaced
    page = (_PAGE.replace("ID", element_id).replace("NEDGES", str(n_edges))
            .replace("SHOWN", str(min(edges_shown, n_edges))).replace("SVGH", str(height + 40))
            .replace("HEIGHT", str(height)).replace("PROMPT", html.escape(graph.prompt))
            .replace("DATA", script_json(data)))
    return page


def show(graph: Graph, kept: Pruned, **kwargs):
    """Display the interactive figure in a notebook, inside an iframe so that its script runs in JupyterLab, in
    exported HTML and on a static site alike."""
    from IPython.display import HTML

    page = "<!doctype html><meta charset='utf-8'><body style='margin:0'>" + to_html(graph, kept, **kwargs)
    return HTML(iframe(page, height=90 * (graph.n_layers + 2) + 170))


def plot_graph(graph: Graph, kept: Pruned, edges_shown: int = 150, ax=None):
    """The same figure, static (matplotlib)."""
    import matplotlib.pyplot as plt

    data = layout(graph, kept)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 1.2 * graph.n_pos + 2), 1.1 * (graph.n_layers + 2) + 1))
    by_id = {n["id"]: n for n in data["nodes"]}
    for e in data["edges"][:edges_shown][::-1]:
        s, t = by_id[e["source"]], by_id[e["target"]]
        ax.plot([s["x"], t["x"]], [s["y"], t["y"]], color="#2563eb" if e["weight"] > 0 else "#dc2626",
                lw=0.4 + 3 * e["width"], alpha=0.6, zorder=1)
    colours = {"embedding": "#9ca3af", "feature": "#f59e0b", "error": "#d1d5db", "logit": "#10b981"}
    for kind, marker in (("embedding", "o"), ("feature", "o"), ("error", "s"), ("logit", "o")):
        ns = [n for n in data["nodes"] if n["kind"] == kind]
        if ns:
            ax.scatter([n["x"] for n in ns], [n["y"] for n in ns], s=[20 + 180 * n["size"] for n in ns],
                       c=colours[kind], marker=marker, edgecolors="k", linewidths=0.5, zorder=2, label=kind)
    ax.set_xticks([(i + 0.5) / graph.n_pos for i in range(graph.n_pos)], graph.tokens, rotation=45, ha="right")
    rows = ["emb"] + [f"L{L}" for L in range(graph.n_layers)] + ["logit"]
    ax.set_yticks([r / (graph.n_layers + 1) for r in range(len(rows))], rows)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.08, 1.08)
    ax.legend(loc="upper left", fontsize=8, ncols=4, bbox_to_anchor=(0, -0.25))
    ax.set_title(f"{graph.prompt!r} -> {graph.logit_strs[0]!r}: {int(kept.nodes.sum())} nodes, "
                 f"{int(kept.edges.sum())} edges kept")
    return ax


def circuit_tracer_json(graph: Graph, kept: Pruned, slug: str, scan: str = "mechlib-course") -> dict:
    """The kept graph in the JSON layout circuit-tracer writes for its viewer (metadata, qParams, nodes, links),
    with its node-id conventions: "{layer}_{latent}_{pos}" for features, "{layer}_-1_{pos}" for errors,
    "E_{token}_{pos}" for embeddings, "{n_layers + 1}_{token}_{pos}" for logits. As there, a node's "influence" is its
    cumulative score (the share of the total influence carried by it and every node more influential than it), which
    the viewer's pruning slider compares, and a feature's "feature" number pairs layer and latent (Cantor pairing).
    It writes no graph-metadata.json."""
    order = kept.influence.argsort(descending=True)
    cumulative = torch.empty_like(kept.influence)
    cumulative[order] = kept.influence[order].cumsum(0) / kept.influence.sum().clamp(min=1e-10)
    nodes, ids = [], {}
    for n in kept.nodes.nonzero()[:, 0].tolist():
        infl = round(float(cumulative[n]), 6)
        pos = graph.position(n)
        if n < graph.n_features:
            layer, _, latent = graph.features[n].tolist()
            paired = (layer + latent) * (layer + latent + 1) // 2 + latent  # unique across layers
            node = {"node_id": f"{layer}_{latent}_{pos}", "feature": paired, "layer": str(layer),
                    "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{latent}-0",
                    "activation": float(graph.activations[n])}
        elif n < graph.errors.stop:
            layer = (n - graph.errors.start) // graph.n_pos
            node = {"node_id": f"{layer}_-1_{pos}", "feature": -1, "layer": str(layer),
                    "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_-1-{pos}"}
        elif n < graph.embeddings.stop:
            tok = int(graph.token_ids[pos])
            node = {"node_id": f"E_{tok}_{pos}", "feature": pos, "layer": "E", "feature_type": "embedding",
                    "jsNodeId": f"E_{tok}-{pos}"}
        else:
            i = n - graph.logits.start
            tok, layer = int(graph.logit_tokens[i]), str(graph.n_layers + 1)
            p = float(graph.logit_probs[i])
            node = {"node_id": f"{layer}_{tok}_{pos}", "feature": tok, "layer": layer, "feature_type": "logit",
                    "jsNodeId": f"L_{tok}-{pos}", "token_prob": p, "is_target_logit": i == 0,
                    "clerp": f'Output "{graph.logit_strs[i]}" (p={p:.3f})'}
        node.update(ctx_idx=pos, influence=infl, run_idx=0, reverse_ctx_idx=0)
        node.setdefault("clerp", "")
        ids[n] = node["node_id"]
        nodes.append(node)
    targets, sources = kept.edges.nonzero(as_tuple=True)
    links = [{"source": ids[s], "target": ids[t], "weight": float(graph.adjacency[t, s])}
             for t, s in zip(targets.tolist(), sources.tolist())]
    return {"metadata": {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": graph.tokens,
                         "prompt": graph.prompt, "node_threshold": None, "schema_version": 1},
            "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
            "nodes": nodes, "links": links}


def save_circuit_tracer_json(graph: Graph, kept: Pruned, path: str | Path, slug: str) -> Path:
    """Write the pruned graph as circuit-tracer's JSON to path (its folder made if missing); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(circuit_tracer_json(graph, kept, slug), indent=1))
    return path
