"""mechlib.fact_prompts and mechlib.model_diff: labelled fact prompts, the residual stream at chosen positions and
the logit lens, checked against plain full runs."""

import pytest
import torch

from mechlib import corpus
from mechlib.fact_prompts import fact_prompts
from mechlib.loading import load_model
from mechlib.model_diff import lens_logits, residual_at


@pytest.fixture(scope="module", params=["course", "course-bpe"])
def model(request):
    return load_model(request.param, device="cpu")


def test_fact_prompts_label_every_landmark_phrasing_and_subject(model):
    facts = fact_prompts(model.tokenizer)
    assert len(facts) == len(corpus.FACTS) * (len(corpus.FACT_TEMPLATES) + len(corpus.FACT_TEMPLATES_HELD_OUT))
    for i in (0, 100, len(facts) - 1):
        ids = facts.tokens[i, :facts.last[i] + 1]
        assert model.to_string(ids[1:]).strip() == facts.texts[i]  # the row is the text, BOS first
        landmark = corpus.FACTS[int(facts.landmark[i])][0]
        upto = model.to_string(ids[1:facts.subject[i] + 1])
        assert upto.endswith(landmark)  # the subject position is the landmark's last token
    eiffel = facts[facts.about(("Eiffel Tower",))]
    assert len(eiffel) == 12 and set(eiffel.city.tolist()) == {corpus.CITIES.index("Paris")}
    with pytest.raises(ValueError, match="unknown landmarks"):
        facts.about(("Eifel Tower",))


def test_residual_at_matches_a_full_cached_run_and_leaves_no_hooks(model):
    facts = fact_prompts(model.tokenizer)
    rows = facts[torch.tensor([0, 5, 200, 450])]
    got = residual_at(model, rows.tokens, rows.last)  # [layer + 1, 4, d_model]
    logits, cache = model.run_with_cache(rows.tokens)
    n = model.cfg.n_layers
    for layer in range(n + 1):
        name = f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post"
        want = cache[name][torch.arange(4), rows.last]
        assert torch.allclose(got[layer], want, atol=1e-5 * want.abs().max().item())
    # the lens at the final residual stream is the model's own logits
    ids = sorted(set(facts.answer.tolist()))
    lens = lens_logits(model, got[-1], ids)
    want = logits[torch.arange(4), rows.last][:, ids]
    assert torch.allclose(lens, want, atol=1e-4 * want.abs().max().item())
    assert torch.equal(model(rows.tokens), logits)  # nothing of the stopped run stayed hooked
    with pytest.raises(ValueError, match="one position per row"):
        residual_at(model, rows.tokens, rows.last[:2])


def test_answer_logits_are_the_models_own_logits_at_the_last_positions(course_bpe_tl, course_bpe_hf):
    """Only the last positions are unembedded (lens_logits at the final residual stream): the same numbers as the
    full forward pass, for TransformerLens (with and without hooks) and Hugging Face."""
    from mechlib.fact_prompts import answer_logits, fact_prompts
    from mechlib.probes import project_out

    facts = fact_prompts(course_bpe_tl.tokenizer)
    facts = facts[torch.arange(0, len(facts), 37)]  # a few rows of every length
    rows = torch.arange(len(facts))
    with torch.no_grad():
        full = course_bpe_tl(facts.tokens)[rows, facts.last]  # [n, d_vocab]
        hf_full = course_bpe_hf(facts.tokens).logits[rows, facts.last]
    assert torch.allclose(answer_logits(course_bpe_tl, facts, chunk=3), full, atol=1e-4 * full.abs().max())
    assert torch.allclose(answer_logits(course_bpe_hf, facts, chunk=3), hf_full, atol=1e-4 * full.abs().max())
    basis = torch.linalg.qr(torch.randn(128, 4, generator=torch.Generator().manual_seed(0))).Q.T  # [4, d_model]
    hooks = [("blocks.2.hook_resid_pre", project_out(basis, facts.last))]
    with torch.no_grad(), course_bpe_tl.hooks(fwd_hooks=hooks):
        hooked = course_bpe_tl(facts.tokens)[rows, facts.last]
    assert not torch.allclose(hooked, full, atol=1e-3)
    assert torch.allclose(answer_logits(course_bpe_tl, facts, hooks), hooked, atol=1e-4 * full.abs().max())
    with pytest.raises(ValueError, match="TransformerLens hooks"):
        answer_logits(course_bpe_hf, facts, hooks)
