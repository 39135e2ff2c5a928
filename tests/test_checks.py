import pytest
import torch

from mechlib.checks import first_mismatch, run_check


def reference(x):
    return x.cumsum(-1)


CASES = [(torch.arange(6.0).reshape(2, 3),), (torch.randn(4, 5, generator=torch.Generator().manual_seed(0)),)]


def test_the_reference_passes(capsys):
    assert run_check("cumsum", reference, reference, CASES)
    assert "✓ cumsum: passed on 2 test inputs" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, expected", [
    (lambda x: x.cumsum(0), "expected"),                        # wrong axis
    (lambda x: x.cumsum(-1)[..., :-1], "has shape (2, 2)"),       # off by one
    (lambda x: x.sum(-1), "has shape (2,)"),                      # forgot it is cumulative
    (lambda x: x.cumsum(-1).tolist(), "should be a torch.Tensor"),
    (lambda x: x.cumsum(-1) + 1e-2, "entries differ"),
])
def test_plausible_wrong_answers_fail_with_the_first_mismatch(wrong, expected, capsys):
    assert not run_check("cumsum", wrong, reference, CASES, hint="sum along the last axis")
    out = capsys.readouterr().out
    assert out.startswith("✗ cumsum") and expected in out and "hint: sum along the last axis" in out


def test_not_implemented_and_crashes_are_reported_not_raised(capsys):
    def stub(x):
        raise NotImplementedError

    assert not run_check("cumsum", stub, reference, CASES)
    assert "not implemented yet" in capsys.readouterr().out
    assert not run_check("cumsum", lambda x: x.nope(), reference, CASES)
    assert "raised AttributeError" in capsys.readouterr().out


def test_a_skipped_exercise_hands_the_cells_below_the_reference(capsys):
    def stub(x):
        raise NotImplementedError

    checked = run_check("cumsum", stub, reference, CASES)
    assert not checked and checked.skipped
    assert torch.equal(checked(CASES[0][0]), reference(CASES[0][0]))  # later cells get the reference's results
    assert "the cells below use mechlib's reference" in capsys.readouterr().out
    mine = lambda x: x.cumsum(-1)  # noqa: E731
    assert run_check("cumsum", mine, reference, CASES).fn is mine  # a learner's function that passes is kept...
    wrong = lambda x: x.cumsum(0)  # noqa: E731
    assert run_check("cumsum", wrong, reference, CASES).fn is wrong  # ...and so is a wrong one: theirs to fix


def test_skipped_lesson_exercises_fall_back_to_mechlib(capsys):
    from mechlib.checks import check_add_vector, check_clamp_latent, check_reference_sae, check_splice_hook
    from mechlib.sae import SAE, SAEConfig, StandardSAE, TopKSAE
    from mechlib.steering import add_vector

    def stub(*args):
        raise NotImplementedError

    assert check_reference_sae(SAE).fn is StandardSAE  # the base class leaves `activate` to be written
    assert check_add_vector(stub).fn is add_vector
    hook = check_splice_hook(stub)(TopKSAE(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2)), torch.ones(1, 3, dtype=bool))
    act = torch.randn(1, 3, 4)
    assert hook(act, None).shape == act.shape and not torch.equal(hook(act, None), act)
    assert not check_clamp_latent(stub) and check_clamp_latent(stub).skipped


def test_every_lesson_uses_what_its_checks_return():
    """`f = check_f(f, ...)`: a learner who skipped an exercise gets mechlib's reference in the cells below."""
    import json
    import re
    from pathlib import Path

    calls = 0
    for path in sorted(Path(__file__).parents[1].glob("notebooks/[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for line in "".join(cell["source"]).splitlines():
                m = re.search(r"\bcheck_\w+\((\w+)", line)
                if m and not line.lstrip().startswith(("from ", "import ")):
                    calls += 1
                    assert re.match(rf"\s*{m.group(1)} = check_\w+\({m.group(1)}\b", line), (path.name, line)
    assert calls >= 17


def test_first_mismatch_on_containers_and_numbers():
    assert first_mismatch([1, (2.0, "a")], [1, (2.0, "a")]) == ""
    assert "result[1][0] is 2.5" in first_mismatch([1, (2.5, "a")], [1, (2.0, "a")])
    assert "keys" in first_mismatch({"a": 1}, {"b": 1})
    assert first_mismatch(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0])) != ""
    assert first_mismatch(torch.tensor([1, 2]), torch.tensor([1.0, 2.0])) != ""


# ---------------------------------------------------------------- lesson 01 checks
from mechlib.checks import check_residual_decomposition  # noqa: E402
from mechlib.residual import residual_components  # noqa: E402


@pytest.fixture
def model(course_tl):
    return course_tl


def test_residual_decomposition_check_passes_the_reference(model, capsys):
    assert check_residual_decomposition(residual_components, model)
    assert "✓" in capsys.readouterr().out


def _without(label):
    def decompose(model, cache):
        comps, labels = residual_components(model, cache)
        i = labels.index(label)
        return torch.cat([comps[:i], torch.zeros_like(comps[i:i + 1]), comps[i + 1:]]), labels
    return decompose


@pytest.mark.parametrize("wrong", [_without("L0 attn bias"), _without("pos_embed"), _without("L3 MLP"),
                                   lambda m, c: (residual_components(m, c)[0][:-1], residual_components(m, c)[1][:-1])])
def test_residual_decomposition_check_catches_mistakes(model, wrong, capsys):
    assert not check_residual_decomposition(wrong, model)
    assert "✗ residual decomposition" in capsys.readouterr().out


def test_logit_attribution_check(model, capsys):
    from mechlib.checks import check_logit_attribution
    from mechlib.residual import direct_logit_attribution

    assert check_logit_attribution(lambda m, c, comps, d: direct_logit_attribution(c, comps, d), model)
    # plausible mistakes: skip the final LayerNorm scale; use the first position
    assert not check_logit_attribution(lambda m, c, comps, d: comps[:, :, -1] @ d, model)
    assert not check_logit_attribution(lambda m, c, comps, d: direct_logit_attribution(c, comps, d, pos=0), model)
    assert capsys.readouterr().out.count("✗") == 2


def test_induction_scores_check(model, capsys):
    from mechlib.attention import induction_scores, previous_token_scores
    from mechlib.checks import check_induction_scores

    assert check_induction_scores(induction_scores, model)
    assert not check_induction_scores(lambda cache, n: previous_token_scores(cache), model)  # wrong offset

    def off_by_one(cache, n):  # attends to the earlier copy of the same token, not the one after it
        pats = [cache[f"blocks.{l}.attn.hook_pattern"] for l in range(model.cfg.n_layers)]
        q = torch.arange(n + 1, 2 * n + 1)
        return torch.stack([p[:, :, q, q - n].mean((0, 2)) for p in pats])

    assert not check_induction_scores(off_by_one, model)
    assert capsys.readouterr().out.count("✗") == 2


# ---------------------------------------------------------------- lesson 02 checks
def test_toy_model_checks(capsys):
    from mechlib.checks import check_feature_dimensionality, check_toy_forward, check_weighted_loss
    from mechlib.toy_models import feature_dimensionality, toy_forward, weighted_mse

    assert check_toy_forward(toy_forward)
    assert check_weighted_loss(weighted_mse)
    assert check_feature_dimensionality(feature_dimensionality)
    assert capsys.readouterr().out.count("✓") == 3
    # plausible mistakes: no ReLU; W W^T instead of W^T W (wrong shape); forgot the importance;
    # summed over the batch; a dimensionality that divides by zero for a feature that is not represented
    assert not check_toy_forward(lambda W, b, x: torch.einsum("ihf,bih->bif", W, torch.einsum("ihf,bif->bih", W, x)) + b)
    assert not check_toy_forward(lambda W, b, x: torch.einsum("ihf,big->bih", W, torch.einsum("igf,bif->big", W, x)))
    assert not check_weighted_loss(lambda x, out, imp: ((x - out) ** 2).sum(-1).mean(0))
    assert not check_weighted_loss(lambda x, out, imp: (imp * (x - out) ** 2).sum(-1).sum(0))

    def no_epsilon(W):
        norms = W.norm(dim=-2)
        overlaps = torch.einsum("...hi,...hj->...ij", W / norms[..., None, :], W) ** 2
        return norms**2 / overlaps.sum(-1)

    assert not check_feature_dimensionality(no_epsilon)
    assert capsys.readouterr().out.count("✗") == 5


def test_sae_checks_pass_the_reference_and_catch_mistakes(capsys):
    from mechlib.checks import check_keep_top, check_reference_sae, check_splice_hook
    from mechlib.sae import SAE, StandardSAE
    from mechlib.sae.topk import keep_top

    assert check_reference_sae(StandardSAE)

    class NotCentred(StandardSAE):
        def pre_activation(self, x):
            return x @ self.W_enc + self.b_enc

    class MeanL1(StandardSAE):
        def sparsity_loss(self, z, pre):
            return self.cfg.l1_coefficient * z.abs().mean()

    class NoRenormalisation(StandardSAE):
        def after_step(self):
            pass

    for wrong in (NotCentred, MeanL1, NoRenormalisation, SAE):
        assert not check_reference_sae(wrong)
    assert check_keep_top(keep_top)
    assert not check_keep_top(lambda v, k: torch.zeros_like(v).scatter(-1, v.topk(k).indices, v.topk(k).values))

    def splice(sae, keep):
        def hook(act, hook):
            out = act.clone()
            out[keep] = sae(act[keep])[0]
            return out
        return hook

    assert check_splice_hook(splice)
    assert not check_splice_hook(lambda sae, keep: lambda act, hook: sae(act)[0])  # BOS replaced too
    assert "✗" in capsys.readouterr().out


def test_lesson_04_checks_accept_mechlib_and_reject_plausible_mistakes(course_tl, capsys):
    from mechlib.checks import check_attribution_heads, check_batched_head_sweep, check_head_patching_loop
    from mechlib.patching import attribution_patch, head_patching_loop, patch_sweep

    model = course_tl
    assert check_head_patching_loop(head_patching_loop, model)
    assert check_batched_head_sweep(lambda m, x, cache, metric: patch_sweep(m, x, cache, metric, "head_out"), model)
    assert check_attribution_heads(lambda m, c, x, metric: attribution_patch(m, c, x, metric, "head_out"), model)
    capsys.readouterr()

    def one_position_only(m, corrupted, cache, metric):  # patches the last position, not all of them
        out = torch.zeros(m.cfg.n_layers, m.cfg.n_heads)
        for layer in range(m.cfg.n_layers):
            for head in range(m.cfg.n_heads):
                name = f"blocks.{layer}.attn.hook_z"

                def hook(act, hook, head=head, name=name):
                    act[:, -1, head] = cache[name][:, -1, head]
                    return act

                with torch.no_grad():
                    out[layer, head] = metric(m.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])).item()
        return out

    assert not check_head_patching_loop(one_position_only, model)
    assert "hint" in capsys.readouterr().out

    def without_baseline(m, c, x, metric):  # forgets to add metric(corrupted)
        return attribution_patch(m, c, x, metric, "head_out") - metric(m(x)).item()

    assert not check_attribution_heads(without_baseline, model)
    assert not check_batched_head_sweep(lambda m, x, cache, metric: head_patching_loop(m, x, cache, metric).T, model)


def test_lesson_05_checks_accept_mechlib_and_reject_plausible_mistakes(course_nnsight, capsys):
    from mechlib.checks import check_nnsight_attribution, check_nnsight_head_patch, check_nnsight_logit_lens
    from mechlib.components import COMPONENTS, component_cache, nnsight_run
    from mechlib.patching import attribution_patch

    model = course_nnsight
    assert check_nnsight_attribution(lambda m, c, x, metric: attribution_patch(m, c, x, metric, "head_out"), model)

    def head_patch(m, clean, corrupted, layer, head, shift=0):
        _, cache = component_cache(m, clean, "head_out")

        def edit(act):
            act = act.clone()
            act[:, :, head + shift] = cache[f"blocks.{layer}.attn.hook_z"][:, :, head + shift]
            return act

        return nnsight_run(m, corrupted, COMPONENTS["head_out"], {layer: edit})[0]

    assert check_nnsight_head_patch(head_patch, model)
    assert not check_nnsight_head_patch(lambda *a: head_patch(*a, shift=1 if a[-1] < 3 else -1), model)  # wrong columns

    def lens(m, tokens, answer, final_norm=True):
        hf = m._module
        hidden = hf(tokens, output_hidden_states=True).hidden_states[1:]
        norm = hf.transformer.ln_f if final_norm else (lambda h: h)
        outs = [hf.lm_head(norm(h)) for h in hidden[:-1]] + [hf(tokens).logits]
        return torch.stack([o.softmax(-1)[0, -1, answer] for o in outs]).detach()

    assert check_nnsight_logit_lens(lens, model)
    assert not check_nnsight_logit_lens(lambda m, t, a: lens(m, t, a, final_norm=False), model)  # forgot ln_f
    assert "hint" in capsys.readouterr().out


def test_lesson_06_checks_accept_mechlib_and_reject_plausible_mistakes(capsys):
    from mechlib.checks import check_add_vector, check_clamp_latent
    from mechlib.steering import add_vector, clamp_latent

    assert check_add_vector(add_vector) and check_clamp_latent(clamp_latent)
    assert not check_add_vector(lambda v, c, p: (lambda act, hook: act + c * v))  # ignores positions
    assert not check_clamp_latent(lambda sae, l, v, p: add_vector(sae.W_dec[l], v, p))  # forgets the current value
    assert "hint" in capsys.readouterr().out


def test_lesson_08_checks_accept_mechlib_and_reject_plausible_mistakes(course_tl, capsys):
    import sys
    from pathlib import Path

    from mechlib.attribution import attribute
    from mechlib.checks import check_error_node, check_influence, check_total_effects
    from mechlib.graph_interventions import total_effects
    from mechlib.graph_pruning import influence
    from mechlib.transcoders import hooks, transcoders_for

    sys.path.insert(0, str(Path(__file__).parent))
    from test_attribution import random_transcoders

    def error_node(model, tc, layer, tokens):
        _, cache = model.run_with_cache(tokens, names_filter=list(hooks(layer)))
        return cache[hooks(layer)[1]][0] - tc(cache[hooks(layer)[0]][0])[0]

    def wrong_hook(model, tc, layer, tokens):  # reads the residual stream, not the MLP's normalised input
        _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{layer}.hook_resid_mid", hooks(layer)[1]])
        return cache[hooks(layer)[1]][0] - tc(cache[f"blocks.{layer}.hook_resid_mid"][0])[0]

    def with_weights(shares, weights):  # counts the logits' own weight as influence
        return influence(shares, weights) + weights

    def one_step(shares, weights):  # direct edges only
        return weights @ shares

    def direct_only(graph):
        nf = graph.n_features
        return graph.adjacency[graph.logits, :nf] / graph.activations

    tcs = transcoders_for(course_tl, "course")
    graph = attribute(course_tl, random_transcoders(course_tl), "The Eiffel Tower is in")
    assert check_influence(influence) and check_error_node(error_node, course_tl, tcs)
    assert check_total_effects(total_effects, graph)
    assert not check_influence(with_weights) and not check_influence(one_step)
    assert not check_error_node(wrong_hook, course_tl, tcs)
    assert not check_error_node(lambda *a: -error_node(*a), course_tl, tcs)
    assert not check_total_effects(direct_only, graph)
    assert "hint" in capsys.readouterr().out
