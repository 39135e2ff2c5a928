"""Both committed course models meet their targets, trained and held-out, and the training script reproduces itself."""

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from mechlib import corpus, load_model
from mechlib.course_eval import TARGETS, evaluate, report
from mechlib.course_model import MODELS, TrainConfig, batches, build_model, expand_vocabulary, sinusoids, train
from mechlib.course_tokenizers import build_tokenizer, corpus_token_ids
from mechlib.loading import MODEL_DIRS

NAMES = list(MODELS)


@pytest.fixture(scope="module", params=NAMES)
def measured(request):
    return request.param, evaluate(MODEL_DIRS[request.param])


def test_factual_recall_in_trained_and_held_out_phrasings(measured):
    _, res = measured
    assert res["n_fact_prompts"] >= 200 and res["n_fact_prompts_held_out"] >= 100
    assert res["fact_accuracy"] >= 0.95
    assert res["fact_accuracy_held_out"] >= 0.90


def test_ioi_in_trained_and_held_out_frames(measured):
    _, res = measured
    assert res["n_ioi_prompts"] >= 200
    assert res["ioi_accuracy"] >= 0.95 and res["ioi_logit_diff"] >= 2.5
    for held_out in ("_held_out_combinations", "_held_out_parts"):  # issue 35's targets: the circuit, not the frames
        assert res["ioi_accuracy" + held_out] >= 0.90 and res["ioi_logit_diff" + held_out] >= 2.0
    assert {"ioi_accuracy_held_out_names", "ioi_logit_diff_held_out_names"} <= res.keys()  # reported, no target
    assert len(res["ioi_each_held_out_part"]) == sum(map(len, corpus.IOI_HELD_OUT_PARTS.values()))  # each, no target


def test_induction(measured):
    _, res = measured
    assert res["induction_loss_second"] <= 0.25 * res["induction_loss_first"]
    assert res["induction_loss_first"] > 3.0  # the first copy really is unpredictable
    assert res["max_induction_score"] >= 0.5 and res["induction_heads"]


# Targets a model is known to miss (xfailed, so a miss shows in the report): none now. course-bpe once had no
# previous-token head (0.26, layer-0 heads smeared over the last few tokens); retrained with more induction
# documents (its mixture) and position embeddings that start as sinusoids, it had two sharp ones (0.91, 0.71).
# Retrained on IOI sentences built from parts, both models' previous-token heads mix in the token itself and only
# just reach the target (course 0.51, course-bpe 0.56; lesson 01 says so).
MISSES = {"course": set(), "course-bpe": set()}


def test_previous_token_heads(measured):
    name, res = measured
    if "max_prev_token_score" in MISSES[name]:
        pytest.xfail(f"{name}: max previous-token score {res['max_prev_token_score']:.2f} < 0.5 (issue 13)")
    assert res["max_prev_token_score"] >= 0.5 and res["prev_token_heads"]


def test_size_and_shape(measured):
    name, res = measured
    assert res["weights_mb"] <= 20
    assert (res["n_layers"], res["n_heads"]) == (MODELS[name].n_layer, MODELS[name].n_head)


def test_report_says_which_targets_are_met(measured):
    name, res = measured
    table, ok = report(res)
    assert ok == (not MISSES[name]), table
    assert table.count("yes") == len(TARGETS) + 1 - len(MISSES[name]) and table.count("NO") == len(MISSES[name])


def test_model_card_holds_the_measured_numbers(measured):
    name, res = measured
    saved = json.loads((MODEL_DIRS[name] / "evaluation.json").read_text())
    for k in TARGETS:
        assert saved[k] == pytest.approx(res[k], abs=1e-3), k
    card = (MODEL_DIRS[name] / "README.md").read_text()
    table, _ = report(saved)
    assert table in card


def test_the_two_models_differ_in_vocabulary_and_shape():
    a, b = MODELS["course"], MODELS["course-bpe"]
    assert a.tokenizer != b.tokenizer and (a.n_layer, a.n_head) != (b.n_layer, b.n_head)


def test_course_bpe_ranks_trained_tokens_first(course_bpe_tl):
    """Untrained GPT-2 tokens share one row whose logit was trained down: at every position of corpus text,
    the full-vocabulary top 20 are tokens the corpus uses, and they take nearly all the probability."""
    model = course_bpe_tl
    used = torch.tensor(corpus_token_ids(model.tokenizer))
    tokens = next(iter(batches(model.tokenizer, seed=99, batch_size=4, n_ctx=64)))  # [4, 64]
    with torch.no_grad():
        probs = model(tokens).softmax(-1)  # [4, 64, d_vocab]
    top = probs.topk(20, dim=-1).indices
    assert torch.isin(top, used).all()
    assert probs[..., used].sum(-1).min() > 0.99


def test_compact_training_equals_the_full_vocabulary_softmax():
    """The shared row with its + log(n) bias is exactly the full softmax over n identical rows."""
    torch.manual_seed(0)
    used, vocab = [0, 3, 5, 9], 12
    compact = build_model(len(used) + 1, n_layer=1, n_head=2, d_model=16, n_ctx=8).eval()
    full = expand_vocabulary(compact, used, vocab, bos=0)
    x = torch.tensor([[0, 1, 2, 3]])  # compact ids of used tokens
    bias = torch.zeros(len(used) + 1)
    bias[-1] = math.log(vocab - len(used))
    with torch.no_grad():
        lc = (compact(x).logits + bias).log_softmax(-1)  # [1, 4, 5]
        lf = full(torch.tensor([used])).logits.log_softmax(-1)  # [1, 4, 12]
    assert torch.allclose(lc[..., :-1], lf[..., used], atol=1e-5)
    others = [i for i in range(vocab) if i not in used]
    assert torch.allclose(lc[..., -1], lf[..., others].logsumexp(-1), atol=1e-5)


@pytest.mark.parametrize("tokenizer", ["word", "gpt2"])
def test_training_is_seeded_and_saves_a_loadable_model(tmp_path, tokenizer):
    cfg = dict(steps=6, batch_size=4, n_layer=2, n_head=4, d_model=32, n_ctx=32, seed=3, tokenizer=tokenizer)
    a = train(TrainConfig(out_dir=str(tmp_path / "a"), **cfg), progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "b"), **cfg), progress=False)
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["tokens_seen"] == 6 * 4 * 32
    for backend in ("transformer_lens", "nnsight", "transformers"):
        assert load_model(str(tmp_path / "a"), backend=backend, device="cpu") is not None
    model = load_model(str(tmp_path / "a"), device="cpu")
    assert model.cfg.n_layers == 2 and model.cfg.n_heads == 4
    assert model.cfg.d_vocab == len(build_tokenizer(tokenizer))


def test_sinusoidal_positions_make_a_one_position_shift_one_linear_map():
    """What a previous-token head needs: one linear map taking every position's code to the next one's.
    Sinusoids have it (a rotation of each sin/cos pair); GPT-2's random start does not."""
    n_ctx, d_model = 256, 32  # more positions than dimensions, so no map fits random codes by chance
    for code, fits in ((sinusoids(n_ctx, d_model), True), (torch.randn(n_ctx, d_model) * 0.02, False)):
        code = code.double()  # float64 and an SVD-based solver: the slowest sinusoids are nearly constant
        shift = torch.linalg.lstsq(code[:-1], code[1:], driver="gelsd").solution  # [d_model, d_model]
        rel_err = (code[:-1] @ shift - code[1:]).norm() / code[1:].norm()
        assert (rel_err < 1e-3) == fits, rel_err
    assert abs(sinusoids(128, 128).std().item() - 0.02) < 1e-6  # GPT-2's init scale


def test_training_starts_positions_as_configured(tmp_path):
    cfg = dict(steps=2, batch_size=2, n_layer=1, n_head=2, d_model=32, n_ctx=32, tokenizer="gpt2")
    train(TrainConfig(out_dir=str(tmp_path), pos_init="sinusoidal", **cfg), progress=False)
    wpe = load_file(tmp_path / "model.safetensors")["transformer.wpe.weight"]  # [n_ctx, d_model]
    assert torch.allclose(wpe, sinusoids(32, 32), atol=1e-4)  # two warmup steps barely move it
    with pytest.raises(ValueError, match="sinusoidal"):
        train(TrainConfig(out_dir=str(tmp_path), pos_init="rotary", **cfg), progress=False)


def test_training_lowers_the_loss(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), steps=500, batch_size=8, n_layer=1, n_head=4, d_model=32, n_ctx=32)
    info = train(cfg, progress=False)
    assert info["initial_loss"] > 5.5  # about ln(458): a uniform guess over the vocabulary
    assert info["final_loss"] < info["initial_loss"] - 1.5
    probe = info["induction_loss_ratio_by_step"]  # the copy-loss probe, logged for the model card
    assert sorted(probe) == [0, 250, 499] and all(r > 0 for r in probe.values())


@pytest.mark.parametrize("name", NAMES)
def test_shipped_configs_are_the_ones_trained(name):
    info = json.loads((MODEL_DIRS[name] / "training.json").read_text())
    expected = {k: v for k, v in vars(replace(MODELS[name])).items() if k != "out_dir"}
    assert info["config"] == json.loads(json.dumps(expected))  # as JSON stores it: the mixture a list


def test_last_logits_are_each_prompts_own_run_a_few_prompts_at_a_time(course_tl, course_tl_folded):
    from mechlib.prompts import last_logits

    prompts = ["The Eiffel Tower is in", "When Mary and John went to the store, John gave a drink to",
               "The Colosseum is in", "Big Ben can be found in", "Mary plays the"]
    whole, chunked = last_logits(course_tl, prompts), last_logits(course_tl, prompts, chunk=2)
    assert whole.shape == (5, course_tl.cfg.d_vocab) and torch.allclose(whole, chunked, atol=1e-4)
    alone = torch.stack([course_tl(p)[0, -1] for p in prompts])
    assert torch.allclose(whole, alone, atol=1e-4)
    assert whole[0].argmax() == course_tl.to_single_token(" Paris")
    # only the last position is unembedded: the same numbers with LayerNorm folded (lesson 01) and under hooks
    folded = last_logits(course_tl_folded, prompts)
    assert torch.allclose(folded - folded.mean(-1, keepdim=True), whole - whole.mean(-1, keepdim=True), atol=1e-3)
    zero_head = [("blocks.0.attn.hook_z", lambda z, hook: z * 0)]
    hooked = last_logits(course_tl, prompts, zero_head)
    alone = torch.stack([course_tl.run_with_hooks(p, fwd_hooks=zero_head)[0, -1] for p in prompts])
    assert not torch.allclose(hooked, whole, atol=1e-2) and torch.allclose(hooked, alone, atol=1e-4)
