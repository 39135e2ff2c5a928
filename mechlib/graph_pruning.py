"""Reading an attribution graph: influence on the output, pruning, and how much of it the features explain.

A full graph has hundreds of nodes and tens of thousands of edges. Following Ameisen et al. 2025 (as circuit-tracer
does): normalise each node's incoming edges to absolute shares that sum to 1, so that a node's *influence* on the
logits is the share of the (probability-weighted) logits that flows through it along all paths; keep the nodes that
carry `node_threshold` of the total influence, then the edges that carry `edge_threshold` of what remains.

    kept = prune(graph)                           # kept.nodes, kept.edges: boolean masks
    replacement_score(graph), completeness(graph) # how much runs through features rather than error nodes
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechlib.attribution import Graph


def normalise(adjacency: torch.Tensor) -> torch.Tensor:
    """Each row's absolute values as shares of the row's total (rows of zeros stay zero).  # [n, n]"""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True).clamp(min=1e-10)


def influence(shares: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """weights @ (S + S^2 + S^3 + ...): the share of the weighted outputs that flows through each node along all
    paths. The graph is acyclic (edges run from earlier layers to later), so the series ends.  # [n]"""
    step, total = weights @ shares, torch.zeros_like(weights)
    for _ in range(len(weights) + 1):
        if not step.any():
            return total
        total += step
        step = step @ shares
    raise RuntimeError("the graph has a cycle: influence does not converge")


def logit_weights(graph: Graph) -> torch.Tensor:
    """Each logit node weighted by its probability, every other node 0.  # [n_nodes]"""
    w = torch.zeros(len(graph.adjacency))
    w[graph.logits] = graph.logit_probs
    return w


def node_influence(graph: Graph) -> torch.Tensor:
    """Each node's influence on the probability-weighted logits.  # [n_nodes]"""
    return influence(normalise(graph.adjacency), logit_weights(graph))


def _cutoff(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The smallest score among the largest scores that together make `keep` of the total."""
    s = scores.flatten().sort(descending=True).values
    i = int(torch.searchsorted(s.cumsum(0) / s.sum().clamp(min=1e-10), torch.tensor(keep)))
    return s[min(i, len(s) - 1)]


@dataclass
class Pruned:
    nodes: torch.Tensor  # [n_nodes] bool: kept nodes
    edges: torch.Tensor  # [n_nodes, n_nodes] bool: kept edges, [target, source]
    influence: torch.Tensor  # [n_nodes]: each node's influence in the full graph


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Keep the nodes carrying `node_threshold` of the influence on the logits (embeddings and logits always), then the
    edges carrying `edge_threshold` of what flows through the kept nodes; then drop feature and error nodes left
    without an edge out (features also without an edge in), until nothing changes."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{name} is a share of the influence, between 0 and 1; got {t}")
    w = logit_weights(graph)
    infl = node_influence(graph)
    nodes = infl >= _cutoff(infl, node_threshold)
    always = torch.zeros_like(nodes)
    always[graph.embeddings.start:] = True  # embeddings and logits
    nodes |= always
    a = graph.adjacency * nodes[:, None] * nodes[None, :]
    shares = normalise(a)
    edge_scores = shares * (influence(shares, w) + w)[:, None]  # [target, source]: influence flowing along each edge
    edges = (edge_scores >= _cutoff(edge_scores, edge_threshold)) & (a != 0)
    inner = torch.zeros_like(nodes)
    inner[:graph.embeddings.start] = True  # features and errors
    features = torch.zeros_like(nodes)
    features[:graph.n_features] = True
    while True:
        edges &= nodes[:, None] & nodes[None, :]
        keep = nodes & ~(inner & ~edges.any(0)) & ~(features & ~edges.any(1))
        if torch.equal(keep, nodes):
            return Pruned(nodes, edges, infl)
        nodes = keep


def replacement_score(graph: Graph) -> float:
    """Of the influence that reaches the logits from the graph's sources (embeddings and error nodes), the share
    that starts at the embeddings: 1 when the transcoders explain everything, lower the more runs through errors."""
    infl = node_influence(graph)
    tokens, errors = float(infl[graph.embeddings].sum()), float(infl[graph.errors].sum())
    return tokens / (tokens + errors)


def completeness(graph: Graph) -> float:
    """The share of each node's inputs that comes from features or embeddings rather than error nodes, averaged
    over the nodes that have inputs (features and logits), weighted by their influence on the logits plus the logits'
    own weights: partial credit where replacement_score gives none. (circuit-tracer's completeness also averages over
    the source nodes, which have no inputs, counting them as complete; error nodes among them.)"""
    shares = normalise(graph.adjacency)
    w = logit_weights(graph)
    weight = influence(shares, w) + w
    from_errors = shares[:, graph.errors].sum(1)
    has_inputs = shares.sum(1) > 0
    return float(((1 - from_errors) * weight)[has_inputs].sum() / weight[has_inputs].sum())


def embedding_shares(graph: Graph) -> torch.Tensor:
    """Of the influence on the logits that starts at the input tokens (the embedding nodes), the share that starts at
    each position.  # [pos]"""
    infl = node_influence(graph)[graph.embeddings]
    return infl / infl.sum().clamp(min=1e-10)


def feature_shares(graph: Graph) -> torch.Tensor:
    """Of the influence on the logits that runs through features, the share through features at each position.  # [pos]"""
    infl = node_influence(graph)[:graph.n_features]
    shares = torch.zeros(graph.n_pos).index_add_(0, graph.features[:, 1], infl)
    return shares / shares.sum().clamp(min=1e-10)
