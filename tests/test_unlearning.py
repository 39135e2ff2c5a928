"""mechlib.unlearning: the resets lesson 07 uses to locate what is specific to some facts, and forgetting names by
their own tokens, which takes those facts and nothing else."""

import copy

import pytest
import torch

from mechlib import corpus
from mechlib.course_eval import abilities
from mechlib.course_tokenizers import corpus_token_ids, encode
from mechlib.fact_prompts import answer_logits, fact_prompts
from mechlib.finetune import RESTRICTED
from mechlib.loading import load_tokenizer, wrap_model
from mechlib.unlearning import forget_names, name_tokens, parameter_groups, redraw_rows, reset


def test_name_tokens_are_those_no_other_word_uses():
    course, bpe = load_tokenizer("course"), load_tokenizer("course-bpe")
    # " Tower" is also Tower Bridge's and the Leaning Tower's; "iff" is also in Tiffany
    assert [course.decode([t]) for t in name_tokens(course, ["Eiffel Tower"])] == ["Eiffel"]
    assert [bpe.decode([t]) for t in name_tokens(bpe, ["Eiffel Tower"])] == [" E", "el"]
    # checked independently: no prompt about another landmark contains any of them
    for tok in (course, bpe):
        facts = fact_prompts(tok)
        own = name_tokens(tok, RESTRICTED)
        elsewhere = facts.tokens[~facts.about(RESTRICTED)]
        assert own and not torch.isin(elsewhere, torch.tensor(own)).any()
        mine = facts.tokens[facts.about(RESTRICTED)]
        assert all(torch.isin(mine, torch.tensor([t])).any() for t in own)


def test_name_tokens_refuses_unknown_landmarks_and_names_with_no_token_of_their_own():
    course = load_tokenizer("course")
    with pytest.raises(ValueError, match="unknown landmarks.*Eifel Tower"):
        name_tokens(course, ["Eifel Tower"])
    with pytest.raises(ValueError, match="Tower Bridge.*no embedding row belongs to them"):
        name_tokens(course, ["Tower Bridge", "Kremlin"])  # "Tower" and "Bridge" are other landmarks' words too


def test_reset_redraws_one_group_and_nothing_else(course_hf):
    model = copy.deepcopy(course_hf)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    group = parameter_groups(model)["L1 MLP"]
    reset(model, group)
    in_group = {id(p) for p in group}
    for name, p in model.named_parameters():
        if id(p) not in in_group:
            assert torch.equal(p, before[name]), name
        elif p.ndim == 2:  # redrawn as at initialisation
            assert not torch.equal(p, before[name])
            assert abs(p.std().item() - model.config.initializer_range) < 0.002 and abs(p.mean().item()) < 0.002
        else:
            assert (p == 0).all()
    assert set(parameter_groups(model)) == {f"L{l} {c}" for l in range(4) for c in ("attention", "MLP")}


def test_redraw_rows_changes_those_rows_of_the_tied_embedding_only(course_bpe_hf):
    model, tok = copy.deepcopy(course_bpe_hf), load_tokenizer("course-bpe")
    rows = name_tokens(tok, ["Kremlin", "Acropolis"])
    wte = model.transformer.wte.weight
    before = wte.detach().clone()
    redraw_rows(model, tok, rows)
    changed = (wte != before).any(-1).nonzero()[:, 0].tolist()
    assert changed == rows
    trained = sorted(set(corpus_token_ids(tok)) - set(rows))
    assert torch.allclose(wte[rows].norm(dim=-1), before[trained].norm(dim=-1).mean().expand(len(rows)), rtol=1e-4)
    assert model.lm_head.weight.data_ptr() == wte.data_ptr()  # tied: the unembedding changed with it


@pytest.mark.parametrize("name", ["course", "course-bpe"])
def test_forgetting_names_takes_their_facts_and_keeps_the_rest(name, request):
    original = request.getfixturevalue(f"{name.replace('-', '_')}_hf")
    hf, tok = copy.deepcopy(original), load_tokenizer(name)
    base = wrap_model(original, tok, name)
    facts = fact_prompts(tok)
    forgotten = forget_names(hf, tok, RESTRICTED)
    edited = wrap_model(hf, tok, name)
    right = answer_logits(edited, facts).argmax(-1).cpu() == facts.answer  # [n]
    whole = [n for n, _, _ in corpus.FACTS if n in RESTRICTED and set(encode(tok, " " + n)) <= set(forgotten)]
    assert len(whole) >= (4 if name == "course" else 3)  # course-bpe: " Col os se um" shares "se" with other words
    kept = {landmark: right[facts.about([landmark])].float().mean().item() for landmark in whole}
    assert max(kept.values()) < 0.3, kept  # names made only of their own tokens: their facts are gone, every one
    base_right = answer_logits(base, facts).argmax(-1).cpu() == facts.answer  # [n]
    others = ~facts.about(RESTRICTED)
    assert (right == base_right)[others].all()  # every other landmark's answer unchanged, in every phrasing
    assert base_right[others].float().mean() > 0.99
    a, b = abilities(edited, n_ioi=100, exclude=forgotten), abilities(base, n_ioi=100, exclude=forgotten)
    assert a["IOI accuracy (held-out frames)"] == b["IOI accuracy (held-out frames)"]  # IOI never reads the names
    assert abs(a["IOI logit difference"] - b["IOI logit difference"]) < 1e-3 * abs(b["IOI logit difference"])
    assert a["induction loss ratio"] < 1.3 * b["induction loss ratio"]
