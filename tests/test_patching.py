"""mechlib.patching against TransformerLens's own patching functions, the reference text's loop and a plain
per-sender path-patching loop; plus the errors a learner meets."""

import contextlib
import io

import pytest
import torch
import transformer_lens.patching as tlp

from mechlib.components import COMPONENTS, run_cache
from mechlib.path_patching import path_patch
from mechlib.patching import attribution_patch, gaussian_noise, head_patching_loop, logit_diff, normalized, patch
from mechlib.prompts import answer_ids, ioi_prompts, to_tokens

TL_FUNCTIONS = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "resid_mid": tlp.get_act_patch_resid_mid,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "head_out": tlp.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
    "q": tlp.get_act_patch_attn_head_q_all_pos,
    "k": tlp.get_act_patch_attn_head_k_all_pos,
    "v": tlp.get_act_patch_attn_head_v_all_pos,
    "pattern": tlp.get_act_patch_attn_head_pattern_all_pos,
}


def _ioi(model, corruption: str):
    pairs = ioi_prompts(model, 6, corruption=corruption, seed=3)
    clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
    ld = logit_diff(answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs))
    metric = normalized(ld, run_cache(model, clean)[0], run_cache(model, corrupted)[0])
    return model, clean, corrupted, metric


@pytest.fixture(scope="module")
def ioi(course_tl):
    """IOI prompts with S2 replaced by IO: queries and values matter here."""
    return _ioi(course_tl, "s2_io")


@pytest.fixture(scope="module")
def ioi_abc(course_tl):
    """IOI prompts against three fresh names: keys matter here."""
    return _ioi(course_tl, "abc")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in TL_FUNCTIONS])
def test_batched_patching_equals_transformer_lens(ioi, ioi_abc, name):
    largest = 0.0
    for model, clean, corrupted, metric in (ioi, ioi_abc):
        _, clean_cache = run_cache(model, clean)
        _, corrupted_cache = run_cache(model, corrupted)
        with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's progress bars
            want_denoise = TL_FUNCTIONS[name](model, corrupted, clean_cache, metric)
            want_noise = TL_FUNCTIONS[name](model, clean, corrupted_cache, metric)
        got_denoise = patch(model, clean, corrupted, metric, name, max_rows=64)  # several passes per sweep
        got_noise = patch(model, clean, corrupted, metric, name, direction="noise")
        assert got_denoise.shape == want_denoise.shape
        torch.testing.assert_close(got_denoise, want_denoise.cpu(), atol=1e-5, rtol=0)
        torch.testing.assert_close(got_noise, want_noise.cpu(), atol=1e-5, rtol=0)
        largest = max(largest, got_denoise.abs().max().item(), (1 - got_noise).abs().max().item())
    # some patch moved the metric, a hundred times the tolerance or more: the comparison is not of two blank maps
    # (the retrained course model's queries carry little of IOI: their largest patch moves it by about 0.02)
    assert largest > 100 * 1e-5


def test_every_component_is_compared_with_transformer_lens():
    assert set(COMPONENTS) - set(TL_FUNCTIONS) == {"resid_post"}


def test_head_sweep_equals_the_reference_loop(ioi):
    model, clean, corrupted, metric = ioi
    _, clean_cache = run_cache(model, clean)
    loop = head_patching_loop(model, corrupted, clean_cache, metric)
    torch.testing.assert_close(patch(model, clean, corrupted, metric, "head_out"), loop, atol=1e-5, rtol=0)


def _path_patch_loop(model, clean, corrupted, metric, receivers, receiver_input):
    """Path patching one sender at a time, written out plainly."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    _, c = run_cache(model, clean)
    _, x = run_cache(model, corrupted)
    last = n_layers if receivers == "logits" else max(l for l, _ in receivers)
    out = torch.full((n_layers, n_heads), float("nan"))
    for sl in range(last):
        for sh in range(n_heads):
            def freeze(act, hook, layer):
                act = c[f"blocks.{layer}.attn.hook_z"].clone()
                if layer == sl:
                    act[:, :, sh] = x[f"blocks.{layer}.attn.hook_z"][:, :, sh]
                return act

            hooks = [(f"blocks.{l}.attn.hook_z", lambda a, hook, l=l: freeze(a, hook, l)) for l in range(n_layers)]
            if receivers == "logits":
                logits = model.run_with_hooks(clean, fwd_hooks=hooks)
            else:
                names = sorted({f"blocks.{l}.attn.hook_{receiver_input}" for l, _ in receivers})
                with model.hooks(fwd_hooks=hooks):
                    _, frozen = model.run_with_cache(clean, names_filter=lambda n: n in names)
                patches = []
                for name in names:
                    heads = [h for l, h in receivers if f"blocks.{l}." in name]

                    def put(act, hook, name=name, heads=heads):
                        act = act.clone()
                        act[:, :, heads] = frozen[name][:, :, heads]
                        return act

                    patches.append((name, put))
                logits = model.run_with_hooks(clean, fwd_hooks=patches)
            out[sl, sh] = metric(logits).item()
    return out


@pytest.mark.parametrize("receivers,receiver_input,data", [
    ("logits", "q", "ioi"), ([(3, 0), (3, 2)], "v", "ioi"), ([(2, 0), (2, 1), (2, 2), (2, 3)], "k", "ioi_abc"),
    ([(2, 0), (2, 1), (2, 2), (2, 3)], "q", "ioi_abc")])
def test_path_patching_equals_a_plain_loop(request, receivers, receiver_input, data):
    model, clean, corrupted, metric = request.getfixturevalue(data)
    with torch.no_grad():
        want = _path_patch_loop(model, clean, corrupted, metric, receivers, receiver_input)
    got = path_patch(model, clean, corrupted, metric, receivers, receiver_input, max_rows=24)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0, equal_nan=True)
    assert (got[~got.isnan()] - 1).abs().max() > 100 * 1e-5  # some path matters, far beyond the tolerance (lesson 04:
    # on the course model no single sender moves these receivers' queries by more than about 0.01)


def test_path_patching_to_logits_skips_nothing_and_to_heads_only_earlier_senders(ioi):
    model, clean, corrupted, metric = ioi
    assert not path_patch(model, clean, corrupted, metric, "logits").isnan().any()
    got = path_patch(model, clean, corrupted, metric, [(2, 3)])
    assert got[:2].isnan().sum() == 0 and got[2:].isnan().all()


def test_attribution_is_the_directional_derivative(ioi):
    """attribution - metric(base) at a site equals d/de metric(base + e (source - base)) there, by finite differences."""
    model, clean, corrupted, metric = ioi
    attribution = attribution_patch(model, clean, corrupted, metric, "resid_pre")  # [layer, pos]
    _, clean_cache = run_cache(model, clean)
    base = metric(run_cache(model, corrupted)[0]).item()
    eps = 1e-2
    for layer, pos in [(1, 4), (2, 14), (3, 14)]:
        name = f"blocks.{layer}.hook_resid_pre"

        def nudge(act, hook):
            act = act.clone()
            act[:, pos] += eps * (clean_cache[name][:, pos] - act[:, pos])
            return act

        with torch.no_grad():
            nudged = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, nudge)])).item()
        slope = (nudged - base) / eps
        assert abs((attribution[layer, pos].item() - base) - slope) < 0.02 * max(1.0, abs(slope)), (layer, pos)


def test_attribution_tracks_real_patching_on_ioi_heads(ioi):
    model, clean, corrupted, metric = ioi
    real = patch(model, clean, corrupted, metric, "head_out").flatten()
    approx = attribution_patch(model, clean, corrupted, metric, "head_out").flatten()
    assert torch.corrcoef(torch.stack([real, approx]))[0, 1] > 0.9
    for name, shape in [("head_out_by_pos", (4, 15, 4)), ("pattern", (4, 4)), ("v", (4, 4))]:
        assert attribution_patch(model, clean, corrupted, metric, name, direction="noise").shape == shape


def test_gaussian_noise_is_undone_by_patching_the_noised_embedding(course_tl):
    model = course_tl
    tokens = to_tokens(model, "The Eiffel Tower is in")
    noise = gaussian_noise(model, tokens, [2], seed=1)
    clean_logits, _ = run_cache(model, tokens)
    noised_logits, _ = run_cache(model, tokens, noise)
    again, _ = run_cache(model, tokens, noise)
    torch.testing.assert_close(noised_logits, again)  # the same noise every run
    assert not torch.allclose(noised_logits, clean_logits, atol=1e-2)
    paris = answer_ids(model, " Paris")
    metric = normalized(lambda logits: logits[:, -1].log_softmax(-1)[:, paris].mean(), clean_logits, noised_logits)
    restored = patch(model, tokens, tokens, metric, "resid_pre", corrupted_hooks=noise)  # [layer, pos]
    assert abs(restored[0, 2].item() - 1) < 1e-4  # the one noised position, before any layer mixes it
    assert restored[0, :2].abs().max() < 1e-4  # positions the noise never touched restore nothing


def test_ioi_prompts_corrupt_what_they_say(course_tl):
    pairs = ioi_prompts(course_tl, 5, template=2, corruption="s2_io", seed=0)
    tokens = to_tokens(course_tl, pairs.clean)
    for i, (clean, corrupted, a, b) in enumerate(zip(pairs.clean, pairs.corrupted, pairs.answers, pairs.wrongs)):
        cw, xw = clean.split(), corrupted.split()
        diff = [i for i, (u, v) in enumerate(zip(cw, xw)) if u != v]
        assert len(cw) == len(xw) and len(diff) == 1 and xw[diff[0]] == a.strip() and cw[diff[0]] == b.strip()
        # the positions point at the names, without any token matching
        ids = {slot: tokens[i, pairs.positions[slot][i]].item() for slot in ("IO", "S1", "S2")}
        assert ids["IO"] == answer_ids(course_tl, a).item() and ids["S1"] == ids["S2"] == answer_ids(course_tl, b).item()
        assert pairs.positions["S1"][i] < pairs.positions["S2"][i] and pairs.positions["end"][i] == tokens.shape[1] - 1
    abc = ioi_prompts(course_tl, 5, corruption="abc", seed=0)
    for clean, corrupted, a, b in zip(abc.clean, abc.corrupted, abc.answers, abc.wrongs):
        assert a.strip() not in corrupted and b.strip() not in corrupted
    assert to_tokens(course_tl, abc.clean).shape == to_tokens(course_tl, abc.corrupted).shape


def test_errors_say_what_to_do(course_tl, ioi):
    model, clean, corrupted, metric = ioi
    with pytest.raises(ValueError, match="same number of tokens"):
        patch(model, "The Eiffel Tower is in", "The Colosseum is in", metric, "head_out")
    with pytest.raises(ValueError, match="different token lengths"):
        to_tokens(model, ["The Eiffel Tower is in", "The Colosseum is in"])
    with pytest.raises(ValueError, match="single token"):
        answer_ids(model, " Eiffel Tower")
    with pytest.raises(ValueError, match="vocabulary"):
        answer_ids(model, " Zanzibar")
    with pytest.raises(ValueError, match="one number"):
        patch(model, clean, corrupted, lambda logits: logits[:, -1, 0], "head_out")
    with pytest.raises(ValueError, match="unknown component"):
        patch(model, clean, corrupted, metric, "hook_z")
    with pytest.raises(ValueError, match="direction"):
        patch(model, clean, corrupted, metric, "head_out", direction="clean")
    with pytest.raises(ValueError, match="changes nothing"):
        logits = run_cache(model, clean)[0]
        normalized(lambda l: l[:, -1, 0].mean(), logits, logits)
    with pytest.raises(ValueError, match="receivers"):
        path_patch(model, clean, corrupted, metric, [(9, 0)])


# ------------------------------------------------------------------ nnsight: the same code path, other backend


@pytest.mark.parametrize("name", ["resid_pre", "resid_post", "attn_out", "mlp_out", "head_out", "head_out_by_pos",
                                  "q", "k", "v"])
def test_nnsight_patching_equals_transformer_lens(ioi, course_nnsight, name):
    model, clean, corrupted, metric = ioi
    for direction in ("denoise", "noise"):
        want = patch(model, clean, corrupted, metric, name, direction=direction)
        got = patch(course_nnsight, clean, corrupted, metric, name, direction=direction, max_rows=24)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["resid_pre", "head_out", "v"])
def test_nnsight_attribution_equals_transformer_lens(ioi, course_nnsight, name):
    model, clean, corrupted, metric = ioi
    want = attribution_patch(model, clean, corrupted, metric, name)
    torch.testing.assert_close(attribution_patch(course_nnsight, clean, corrupted, metric, name), want, atol=1e-5,
                               rtol=0)
    assert (want - metric(run_cache(model, corrupted)[0]).item()).abs().max() > 0.1  # gradients reached the sites


def test_nnsight_gets_the_same_token_ids_and_clear_errors(course_tl, course_nnsight, ioi):
    _, clean, corrupted, metric = ioi
    pairs = ioi_prompts(course_tl, 3, seed=1)
    assert torch.equal(to_tokens(course_nnsight, pairs.clean), to_tokens(course_tl, pairs.clean))  # BOS included
    assert torch.equal(answer_ids(course_nnsight, pairs.answers), answer_ids(course_tl, pairs.answers))
    with pytest.raises(ValueError, match="vocabulary"):
        answer_ids(course_nnsight, " Zanzibar")
    for name in ("pattern", "resid_mid"):
        with pytest.raises(ValueError, match="nnsight can't reach it"):
            patch(course_nnsight, clean, corrupted, metric, name)
    with pytest.raises(ValueError, match="TransformerLens model"):
        path_patch(course_nnsight, clean, corrupted, metric)
    with pytest.raises(ValueError, match="TransformerLens"):
        gaussian_noise(course_nnsight, clean, [2])
