"""Transcoders: the shipped ones imitate their MLPs, splicing replaces exactly the layers asked for, and a model
without shipped transcoders gets its own, trained once and cached."""

import pytest
import torch

from mechlib import transcoders as T
from mechlib.sae.metrics import eval_tokens


@pytest.fixture(scope="module")
def shipped(course_tl):
    return T.transcoders_for(course_tl, "course")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_the_shipped_transcoders_imitate_their_mlps(name, request):
    model = request.getfixturevalue("course_tl" if name == "course" else "course_bpe_tl")
    tcs = T.transcoders_for(model, name)
    assert [tc.transcoder for tc in tcs] == [True] * model.cfg.n_layers
    m = T.replacement_metrics(model, tcs, eval_tokens(model, n_batches=2))
    for layer in m["layers"]:
        assert layer["fvu"] < 0.15, layer
        # layer 0's MLP reads little more than the token (the course model has 557 for 1024 latents): more die there
        assert layer["dead"] < (0.6 if layer["layer"] == 0 else 0.45), layer
        assert layer["l0"] <= tcs[0].cfg.k
    assert m["ce_recovered"] > 0.9, T.metrics_table(m)
    assert m["top1_agreement"] > 0.7, T.metrics_table(m)  # 76% (course), 89% (course-bpe)


def test_splice_replaces_only_the_layers_asked_for(course_tl, shipped):
    tokens = course_tl.to_tokens(["The Eiffel Tower is in", "When Mary and John went to the store, John gave"])
    inp, out = T.hooks(1)
    _, cache = course_tl.run_with_cache(tokens, names_filter=[inp])
    text = T.text_positions(course_tl, tokens)[..., None]  # BOS and the padding keep the real MLP output
    assert (~text).sum() >= 2
    by_hand = course_tl.run_with_hooks(tokens, fwd_hooks=[(out, lambda act, hook: torch.where(text, shipped[1](cache[inp])[0], act))])
    spliced = course_tl.run_with_hooks(tokens, fwd_hooks=T.splice(course_tl, shipped, tokens, layers=[1]))
    torch.testing.assert_close(spliced, by_hand)
    assert not torch.allclose(spliced, course_tl(tokens), atol=1e-3)


def test_another_model_gets_transcoders_trained_once_and_cached(course_tl, tmp_path, monkeypatch):
    """"course" under another name stands for a model without shipped transcoders (a tiny recipe, for speed)."""
    monkeypatch.setenv("MECHLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(T, "RECIPE", {**T.RECIPE, "steps": 3, "batch_size": 256, "buffer_size": 1024})
    tcs = T.transcoders_for(course_tl, "my-model", progress=False)
    assert len(tcs) == 4 and all((tmp_path / "transcoders" / "my-model" / f"L{L}").is_dir() for L in range(4))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(T, "train_transcoder", no_training)
    again = T.transcoders_for(course_tl, "my-model")
    torch.testing.assert_close(again[2].W_enc, tcs[2].W_enc)
    (tmp_path / "transcoders" / "other").symlink_to(tmp_path / "transcoders" / "my-model")
    with pytest.raises(ValueError, match="not a transcoder for 'other'"):
        T.transcoders_for(course_tl, "other")


def test_a_missing_shipped_transcoder_says_how_to_restore_it(course_tl, monkeypatch, tmp_path):
    monkeypatch.setattr(T, "SHIPPED", tmp_path)
    with pytest.raises(FileNotFoundError, match="git checkout -- data/transcoders"):
        T.transcoders_for(course_tl, "course")
