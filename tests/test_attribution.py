"""Attribution graphs against a plain reference: a forward pass of the local replacement model written out with the
real run's attention patterns and LayerNorm scales put back in (not merely detached), where each source can be
removed on its own. Untrained (random) transcoders are enough: the graph must be exact for any transcoder."""

import pytest
import torch

from mechlib.attribution import attribute, logit_direction
from mechlib.sae.store import run_until
from mechlib.prompts import answer_ids
from mechlib.graph_pruning import completeness, influence, normalise, prune, replacement_score
from mechlib.sae import SAEConfig, make_sae
from mechlib.transcoders import hooks

PROMPT = "The Eiffel Tower is in"


def random_transcoders(model, seed=0, skip=False):
    d = model.cfg.d_model
    out = []
    for L in range(model.cfg.n_layers):
        tc = make_sae(SAEConfig(d_in=d, d_out=d, d_sae=4 * d, architecture="topk", k=8, skip=skip, seed=seed + L))
        with torch.no_grad():  # encoder lengths like a trained one's, so features are not all tiny
            tc.W_enc_v.mul_(20.0)
            if skip:
                tc.W_skip.copy_(torch.randn(d, d, generator=torch.Generator().manual_seed(L)) / d ** 0.5)
        out.append(tc.eval())
    return out


def frozen_run(model, tokens, cache, resid0, mlp_outs, tcs):
    """The local replacement model, evaluated anywhere: patterns and scales are the clean run's *values*; resid0 and
    every MLP output are given (less a skip transcoder's linear part, which is added from the MLP's input in this run).
    Returns each layer's MLP input and the final LayerNorm's output at the last position."""
    n = model.cfg.n_layers
    put = lambda act, hook: cache[hook.name]  # noqa: E731
    ins = {}
    fwd = [(f"blocks.{L}.{h}", put) for L in range(n) for h in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale")]
    fwd += [("ln_final.hook_scale", put), ("blocks.0.hook_resid_pre", lambda act, hook: resid0[None])]
    fwd += [(hooks(L)[1], (lambda L: lambda act, hook: mlp_outs[L][None] + tcs[L].skip_connection(ins[L][None]))(L))
            for L in range(n)]
    fwd += [(hooks(L)[0], (lambda L: lambda act, hook: ins.__setitem__(L, act[0]))(L)) for L in range(n)]
    with torch.no_grad():
        final = run_until(model, tokens, fwd, "ln_final.hook_out")[0, -1]
    return ins, final


def node_values(model, tcs, graph, ins, final):
    """Every target node's value in one frozen run: features' pre-activations, then the logits (less the mean)."""
    feats = torch.stack([ins[L][p] @ tcs[L].W_enc[:, f] + tcs[L].b_enc[f] for L, p, f in graph.features.tolist()])
    u, b = logit_direction(model, graph.logit_tokens, graph.minus)
    return torch.cat([feats, final @ u + b]).detach()


@pytest.fixture(scope="module", params=["course", "folded", "skip", "contrast"])
def setup(request, course_tl, course_tl_folded):
    model = course_tl_folded if request.param == "folded" else course_tl
    tcs = random_transcoders(model, skip=request.param in ("skip", "contrast"))
    contrast = tuple(answer_ids(model, [" Paris", " Rome"]).tolist()) if request.param == "contrast" else None
    graph = attribute(model, tcs, PROMPT, contrast=contrast, batch_size=64)
    tokens = model.to_tokens(PROMPT)
    names = [f"blocks.{L}.{h}" for L in range(model.cfg.n_layers)
             for h in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale", "mlp.hook_in", "hook_mlp_out")]
    _, cache = model.run_with_cache(tokens, names_filter=names + ["ln_final.hook_scale", "blocks.0.hook_resid_pre"])
    return model, tcs, graph, tokens, cache


def sources(model, tcs, cache):
    """The clean run's sources: resid0 [pos, d], and per layer the features' part of the MLP output and the error."""
    outs, errs = [], []
    for L, tc in enumerate(tcs):
        z = tc.encode(cache[hooks(L)[0]][0])
        z[0] = 0  # BOS is not text: no features there
        outs.append(z @ tc.W_dec)  # [pos, d]
        errs.append(cache[hooks(L)[1]][0] - outs[-1] - tc.b_dec - tc.skip_connection(cache[hooks(L)[0]][0]))
    return cache["blocks.0.hook_resid_pre"][0], outs, errs


def test_the_frozen_run_reproduces_the_real_one_and_the_graph_lists_its_active_features(setup):
    model, tcs, graph, tokens, cache = setup
    resid0, outs, errs = sources(model, tcs, cache)
    mlp = [o + tc.b_dec + e for o, tc, e in zip(outs, tcs, errs)]
    ins, final = frozen_run(model, tokens, cache, resid0, mlp, tcs)
    logits = model(tokens)[0, -1]
    u, b = logit_direction(model, graph.logit_tokens, graph.minus)
    subtract = logits.mean() if graph.minus is None else logits[graph.minus]
    torch.testing.assert_close(final @ u + b, logits[graph.logit_tokens] - subtract, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(graph.logit_values, (final @ u + b).detach(), rtol=1e-4, atol=1e-4)
    if graph.minus is not None:
        assert len(graph.logit_tokens) == 1 and graph.logit_strs[0].count("-") == 1
    n_active = sum(int((tc.encode(cache[hooks(L)[0]][0])[1:] > 0).sum()) for L, tc in enumerate(tcs))
    assert (graph.features[:, 1] > 0).all()  # none at BOS
    assert graph.n_features == n_active > 0
    if graph.minus is None:
        assert graph.logit_probs.sum() >= 0.95 or len(graph.logit_tokens) == 10
        assert graph.logit_probs[0] == model(tokens)[0, -1].softmax(-1).max()


def test_edges_into_every_node_sum_to_its_value_less_the_biases(setup):
    """The frozen model is affine in its sources, so a node's value is its incoming edges plus what it is with every
    source removed. A gradient through a pattern or a scale left live would break this."""
    model, tcs, graph, tokens, cache = setup
    resid0, outs, errs = sources(model, tcs, cache)
    value = node_values(model, tcs, graph, *frozen_run(model, tokens, cache, resid0,
                                                       [o + tc.b_dec + e for o, tc, e in zip(outs, tcs, errs)], tcs))
    bias_only = node_values(model, tcs, graph, *frozen_run(
        model, tokens, cache, torch.zeros_like(resid0), [tc.b_dec.expand_as(o) for o, tc in zip(outs, tcs)], tcs))
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.logits.stop)])
    incoming = graph.adjacency[targets].sum(1)
    scale = value.abs().max()
    torch.testing.assert_close(incoming + bias_only, value, rtol=0, atol=2e-4 * scale)
    assert (graph.adjacency[graph.n_features:graph.logits.start] == 0).all()  # errors and embeddings have no inputs


def test_each_edge_is_the_change_when_its_source_alone_is_removed(setup):
    """The reference loop: remove one source (a feature, an error node, an embedding) in the frozen model, holding
    every other source fixed, and read the change in every target."""
    model, tcs, graph, tokens, cache = setup
    resid0, outs, errs = sources(model, tcs, cache)
    mlp = [o + tc.b_dec + e for o, tc, e in zip(outs, tcs, errs)]
    base = node_values(model, tcs, graph, *frozen_run(model, tokens, cache, resid0, mlp, tcs))
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logits.start, graph.logits.stop)])
    layer0 = (graph.features[:, 0] == 0).nonzero()[:3, 0].tolist()
    picks = layer0 + [graph.error_node(1, 3), graph.embeddings.start + 2]
    for node in picks:
        m, r = [t.clone() for t in mlp], resid0.clone()
        if node < graph.n_features:
            L, p, f = graph.features[node].tolist()
            m[L][p] -= graph.activations[node] * tcs[L].W_dec[f].detach()
        elif node < graph.errors.stop:
            L, p = divmod(node - graph.errors.start, graph.n_pos)
            m[L][p] -= errs[L][p]
        else:
            r[node - graph.embeddings.start] = 0
        change = base - node_values(model, tcs, graph, *frozen_run(model, tokens, cache, r, m, tcs))
        torch.testing.assert_close(graph.adjacency[targets, node], change, rtol=0, atol=2e-4 * base.abs().max())
        assert change.abs().max() > 0  # each source reaches something


def test_batch_size_does_not_change_the_graph(setup):
    model, tcs, graph, _, _ = setup
    contrast = None if graph.minus is None else (int(graph.logit_tokens[0]), int(graph.minus[0]))
    other = attribute(model, tcs, PROMPT, contrast=contrast, batch_size=7)
    torch.testing.assert_close(other.adjacency, graph.adjacency, rtol=1e-4, atol=1e-5)


def test_attribute_refuses_a_wrong_number_of_transcoders(course_tl):
    with pytest.raises(ValueError, match="one transcoder per layer"):
        attribute(course_tl, random_transcoders(course_tl)[:2], PROMPT)


def hand_graph():
    """emb0 -> f0 -> logit (strong), emb1 -> err -> logit (weak), emb1 -> f1 -> f0 (tiny)."""
    from mechlib.attribution import Graph

    # nodes: f0, f1 | err(L0,p0), err(L0,p1) | emb0, emb1 | logit
    a = torch.zeros(7, 7)
    a[0, 4], a[0, 1] = 3.0, 0.01
    a[1, 5] = 1.0
    a[6, 0], a[6, 3] = 6.0, -2.0
    a[3, 5] = 0.0  # error nodes have no inputs
    return Graph(prompt="a b", tokens=["a", "b"], token_ids=torch.tensor([1, 2]),
                 features=torch.tensor([[0, 1, 5], [0, 0, 7]]), activations=torch.tensor([3.0, 1.0]),
                 logit_tokens=torch.tensor([9]), logit_probs=torch.tensor([1.0]), logit_values=torch.tensor([4.0]),
                 logit_strs=["c"], adjacency=a, n_layers=1)


def test_influence_is_the_share_of_the_logit_along_all_paths():
    g = hand_graph()
    infl = influence(normalise(g.adjacency), torch.tensor([0, 0, 0, 0, 0, 0, 1.0]))
    # the logit: 6/8 from f0, 2/8 from the error; f0: 3/3.01 from emb0, 0.01/3.01 from f1; f1 all from emb1
    f0 = 6 / 8
    expected = torch.tensor([f0, f0 * 0.01 / 3.01, 0, 2 / 8, f0 * 3 / 3.01, f0 * 0.01 / 3.01, 0])
    torch.testing.assert_close(infl, expected)
    assert replacement_score(g) == pytest.approx(expected[4:6].sum() / (expected[4:6].sum() + 2 / 8))
    # completeness: the logit's inputs are 3/4 non-error, f0's and f1's all; weights 1, 0.75, 0.0025
    w = torch.tensor([1.0, f0, f0 * 0.01 / 3.01])
    assert completeness(g) == pytest.approx(float((w * torch.tensor([0.75, 1, 1])).sum() / w.sum()))


def test_prune_keeps_the_strong_path_and_drops_the_tiny_one():
    g = hand_graph()
    kept = prune(g, node_threshold=0.9, edge_threshold=0.99)
    assert kept.nodes.tolist() == [True, False, False, True, True, True, True]
    assert kept.edges[6, 0] and kept.edges[0, 4] and kept.edges[6, 3] and not kept.edges[0, 1]
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune(g, node_threshold=80)


def test_pruning_a_real_graph_keeps_most_influence_with_few_nodes(setup):
    model, tcs, graph, _, _ = setup
    kept = prune(graph)
    inner = kept.nodes[:graph.embeddings.start]
    assert 0 < inner.sum() < 0.5 * graph.embeddings.start
    assert kept.influence[:graph.embeddings.start][inner].sum() >= 0.5 * kept.influence[:graph.embeddings.start].sum()


def test_the_graphs_predicted_effects_are_what_its_own_frozen_model_does(setup):
    """A small change to one feature (1%) in the model with patterns and scales frozen is exactly the graph's prediction
    along all paths (small enough that no feature crosses its threshold or leaves its layer's top k: at 3% one does,
    on the folded course model); in the live model (attention and LayerNorm recomputed) it is not, which is what lesson 08
    measures."""
    from mechlib.graph_interventions import measured_effects, predicted_effects

    model, tcs, graph, _, _ = setup
    early = (graph.features[:, 0] < 2).nonzero()[:, 0]
    strongest = predicted_effects(graph, early.tolist())[:, 0].abs().argsort(descending=True)[:6]
    nodes = early[strongest].tolist()  # the six features of layers 0-1 the graph says matter most
    predicted = predicted_effects(graph, nodes, scale=0.99)
    frozen = measured_effects(model, tcs, graph, nodes, scale=0.99, frozen=True)
    torch.testing.assert_close(frozen, predicted, rtol=0.02, atol=0.02 * float(predicted.abs().max()))
    live = measured_effects(model, tcs, graph, nodes, scale=0.99)
    assert (live - predicted).abs().max() > 0.05 * predicted.abs().max()


def test_the_viewer_is_self_contained_and_the_json_follows_circuit_tracer(setup, tmp_path):
    import json
    import re

    from mechlib.graph_viewer import circuit_tracer_json, plot_graph, save_circuit_tracer_json, show, to_html

    model, tcs, graph, _, _ = setup
    kept = prune(graph)
    page = to_html(graph, kept)
    assert "<script>" in page and "<svg" in page
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from anywhere
    data = json.loads(re.search(r"const data = (\{.*?\}), root", page).group(1))
    assert len(data["nodes"]) == int(kept.nodes.sum()) and len(data["edges"]) == int(kept.edges.sum())
    assert "srcdoc=" in show(graph, kept).data
    ct = circuit_tracer_json(graph, kept, slug="test")
    ids = {n["node_id"] for n in ct["nodes"]}
    assert {"metadata", "qParams", "nodes", "links"} <= set(ct) and len(ids) == len(ct["nodes"])
    assert all(link["source"] in ids and link["target"] in ids for link in ct["links"])
    kinds = {n["feature_type"] for n in ct["nodes"]}
    assert {"embedding", "logit"} <= kinds <= {"embedding", "logit", "cross layer transcoder", "mlp reconstruction error"}
    assert [n for n in ct["nodes"] if n.get("is_target_logit")][0]["feature"] == int(graph.logit_tokens[0])
    path = save_circuit_tracer_json(graph, kept, tmp_path / "graphs" / "g.json", slug="test")
    assert json.loads(path.read_text())["metadata"]["prompt"] == PROMPT
    ax = plot_graph(graph, kept)
    assert len(ax.collections) >= 3  # embeddings, features, logits (errors if any were kept)


def test_source_contributions_are_what_removing_each_source_does_in_the_linearised_model(setup):
    """The linearised model: patterns and scales frozen, and the active features kept active and linear (their
    pre-activations recomputed in the run, no others switching on). Removing one source there changes each logit by
    exactly its contribution along all paths."""
    from mechlib.graph_interventions import source_contributions

    model, tcs, graph, tokens, cache = setup
    resid0, outs, errs = sources(model, tcs, cache)
    n = model.cfg.n_layers
    put = lambda act, hook: cache[hook.name]  # noqa: E731

    def linear_run(r0, errors):
        ins = {}
        fwd = [(f"blocks.{L}.{h}", put) for L in range(n) for h in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale")]
        fwd += [("ln_final.hook_scale", put), ("blocks.0.hook_resid_pre", lambda act, hook: r0[None])]
        fwd += [(hooks(L)[0], (lambda L: lambda act, hook: ins.__setitem__(L, act[0]))(L)) for L in range(n)]

        def mlp(L):
            def hook(act, hook):
                f = graph.features[graph.features[:, 0] == L]
                pre = (ins[L][f[:, 1]] * tcs[L].W_enc[:, f[:, 2]].T).sum(-1) + tcs[L].b_enc[f[:, 2]]  # [n_L]
                feats = torch.zeros_like(act[0]).index_add_(0, f[:, 1], pre[:, None] * tcs[L].W_dec[f[:, 2]])
                return (feats + tcs[L].b_dec + errors[L] + tcs[L].skip_connection(ins[L]))[None]
            return hook

        fwd += [(hooks(L)[1], mlp(L)) for L in range(n)]
        with torch.no_grad():
            final = run_until(model, tokens, fwd, "ln_final.hook_out")[0, -1]
            u, b = logit_direction(model, graph.logit_tokens, graph.minus)
            return final @ u + b

    contrib = source_contributions(graph)  # [n_logits, n_errors + n_pos]
    base = linear_run(resid0, errs)
    torch.testing.assert_close(base, graph.logit_values, rtol=1e-4, atol=1e-3)
    for j in [2, 5, graph.n_layers * graph.n_pos + 1, graph.n_layers * graph.n_pos + graph.n_pos - 1]:
        r, e = resid0.clone(), [x.clone() for x in errs]
        if j < graph.n_layers * graph.n_pos:
            L, p = divmod(j, graph.n_pos)
            e[L][p] = 0
        else:
            r[j - graph.n_layers * graph.n_pos] = 0
        torch.testing.assert_close(base - linear_run(r, e), contrib[:, j], rtol=1e-3, atol=1e-3 * float(base.abs().max()))
