"""The course model: a small GPT-2 trained on the course corpus, with the script that trains it.

    python -m mechlib.course_model train      # retrain data/course-model from scratch (make course-model)
    python -m mechlib.course_model evaluate   # print the targets on held-out prompts

Everything that defines the model is a plain constant below, as in nanoGPT.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from mechlib import corpus
from mechlib.attention import induction_scores, previous_token_scores
from mechlib.loading import COURSE_MODEL_DIR, load_model, resolve

# --- model ---
N_LAYER = 4
N_HEAD = 4
D_MODEL = 128
N_CTX = 128
# --- training ---
SEED = 0
STEPS = 4000
BATCH_SIZE = 32  # rows of N_CTX tokens: 4096 tokens a step
LR = 2e-3
WARMUP = 100
WEIGHT_DECAY = 0.1
N_THREADS = 2  # measured: 1.5x faster than one thread at this size on 2 cores

# --- targets (issue 2), checked by `evaluate` and by tests/test_course_model.py ---
TARGETS = dict(fact_accuracy=0.95, ioi_accuracy=0.95, ioi_logit_diff=2.5, induction_loss_ratio=0.25,
               max_induction_score=0.5, max_prev_token_score=0.5, weights_mb=20.0)


def build_tokenizer():
    """A word-level tokenizer over the corpus vocabulary: " Paris" and "Paris" are the same single id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(corpus.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=corpus.UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # same split as corpus.split_words
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ."
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=corpus.BOS, eos_token=corpus.BOS,
                                   pad_token=corpus.BOS, unk_token=corpus.UNK, model_max_length=N_CTX)


def build_model(vocab_size: int, n_layer: int = N_LAYER, n_head: int = N_HEAD, d_model: int = D_MODEL,
                n_ctx: int = N_CTX):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_ctx, n_embd=d_model, n_layer=n_layer,
                     n_head=n_head, n_inner=4 * d_model, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
                     pad_token_id=0)
    return GPT2LMHeadModel(cfg)


def batches(tokenizer, seed: int, batch_size: int, n_ctx: int):
    """Endless batches of packed training documents, each starting with BOS.  # [batch, n_ctx]"""
    ids = tokenizer.get_vocab()
    return corpus.PackedTokenBatches(lambda doc: [ids[w] for w in doc.words], ids[corpus.BOS], seed,
                                     batch_size, n_ctx)


@dataclass
class TrainConfig:
    out_dir: str = str(COURSE_MODEL_DIR)
    steps: int = STEPS
    batch_size: int = BATCH_SIZE
    lr: float = LR
    seed: int = SEED
    n_layer: int = N_LAYER
    n_head: int = N_HEAD
    d_model: int = D_MODEL
    n_ctx: int = N_CTX


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train the course model from scratch and save it (HF format) to cfg.out_dir."""
    torch.manual_seed(cfg.seed)  # the corpus generator has its own seeded RNG
    torch.set_num_threads(N_THREADS)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), cfg.n_layer, cfg.n_head, cfg.d_model, cfg.n_ctx)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < WARMUP:
            return cfg.lr * (step + 1) / WARMUP
        t = (step - WARMUP) / max(1, cfg.steps - WARMUP)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))

    data = batches(tokenizer, cfg.seed, cfg.batch_size, cfg.n_ctx)
    losses = []
    start = time.time()
    bar = tqdm(range(cfg.steps), desc="training", disable=not progress, mininterval=2)
    for step in bar:
        tokens = next(data)  # [batch, n_ctx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(tokens, labels=tokens).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    model.eval()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tail = losses[-50:]
    config = {k: v for k, v in asdict(cfg).items() if k != "out_dir"}
    info = dict(train_seconds=round(time.time() - start, 1), initial_loss=round(losses[0], 4),
                final_loss=round(sum(tail) / len(tail), 4), tokens_seen=cfg.steps * cfg.batch_size * cfg.n_ctx,
                config=config)
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ---------------------------------------------------------------- evaluation


def _last_logits(model, prompts: list[list[str]]) -> torch.Tensor:
    """Logits at the last position of each word-list prompt (BOS prepended).  # [n, d_vocab]"""
    tok = model.tokenizer
    ids = [[tok.bos_token_id] + tok.convert_tokens_to_ids(p) for p in prompts]
    n = max(map(len, ids))
    tokens = torch.tensor([x + [tok.pad_token_id] * (n - len(x)) for x in ids], device=model.cfg.device)
    with torch.no_grad():
        logits = model(tokens)  # [n, pos, d_vocab]
    last = torch.tensor([len(x) - 1 for x in ids], device=logits.device)
    return logits[torch.arange(len(ids)), last]


def evaluate(model_dir: str | Path = COURSE_MODEL_DIR, seed: int = 12345, n_ioi: int = 400,
             n_context: int = 200) -> dict:
    """Measure the course model's targets on fresh prompts (a seed the training data never used)."""
    model = load_model(str(model_dir), device="cpu")
    gen = corpus.CorpusGenerator(seed)
    vocab_ids = model.tokenizer.get_vocab()
    res: dict[str, float] = {}

    # factual recall: every fact in every phrasing, bare, plus fresh draws after a filler sentence
    prompts, answers = [], []
    for i in range(len(corpus.FACTS)):
        for t in corpus.FACT_TEMPLATES:
            d = gen.fact(i, t, with_answer=False)
            prompts.append(d.words)
            answers.append(vocab_ids[corpus.FACTS[i][2]])
    for _ in range(n_context):
        ctx, d = gen.filler(), gen.fact(with_answer=True)
        prompts.append(ctx.words + d.words[:-2])
        answers.append(vocab_ids[d.words[-2]])
    logits = _last_logits(model, prompts)
    res["fact_accuracy"] = (logits.argmax(-1) == torch.tensor(answers)).float().mean().item()
    res["n_fact_prompts"] = len(prompts)

    # IOI: fresh random (template, names, place, object)
    prompts, io, s = [], [], []
    for _ in range(n_ioi):
        d = gen.ioi(with_answer=False)
        prompts.append(d.words)
        io.append(vocab_ids[d.words[d.slot.index("IO")]])
        s.append(vocab_ids[d.words[d.slot.index("S1")]])
    logits = _last_logits(model, prompts)
    r = torch.arange(n_ioi)
    diff = logits[r, io] - logits[r, s]
    res["ioi_accuracy"] = (diff > 0).float().mean().item()
    res["ioi_logit_diff"] = diff.mean().item()
    res["n_ioi_prompts"] = n_ioi

    # induction: random in-vocabulary words, 20 then the same 20 again
    torch.manual_seed(seed)
    content = torch.tensor([vocab_ids[w] for w in corpus.content_words()])
    rand = content[torch.randint(len(content), (50, 20))]  # [batch, 20]
    tokens = torch.cat([torch.zeros(50, 1, dtype=torch.long), rand, rand], dim=1)  # [batch, 41]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]  # [batch, 40]
    first, second = -logp[:, :20].mean().item(), -logp[:, 20:].mean().item()
    res["induction_loss_first"], res["induction_loss_second"] = first, second
    res["induction_loss_ratio"] = second / first
    ind = induction_scores(cache, seq_len=20)  # [layer, head]
    prev = previous_token_scores(cache)  # [layer, head]
    res["max_induction_score"], res["max_prev_token_score"] = ind.max().item(), prev.max().item()
    res["induction_heads"] = [f"L{l}H{h}" for l, h in (ind >= 0.5).nonzero().tolist()]
    res["prev_token_heads"] = [f"L{l}H{h}" for l, h in (prev >= 0.5).nonzero().tolist()]

    # size
    res["weights_mb"] = (Path(model_dir) / "model.safetensors").stat().st_size / 1e6
    res["n_layers"], res["n_heads"] = model.cfg.n_layers, model.cfg.n_heads
    return res


def report(res: dict) -> tuple[str, bool]:
    """A table of measured vs target values; ok is True when every target is met."""
    lower_is_better = {"induction_loss_ratio", "weights_mb"}
    lines, ok = [f"{'metric':24} {'measured':>10} {'target':>10}  met"], True
    for k, target in TARGETS.items():
        met = res[k] <= target if k in lower_is_better else res[k] >= target
        ok &= met
        lines.append(f"{k:24} {res[k]:10.3f} {('<= ' if k in lower_is_better else '>= ') + str(target):>10}  "
                     f"{'yes' if met else 'NO'}")
    met = res["n_layers"] >= 2 and res["n_heads"] >= 4
    ok &= met
    lines.append(f"{'layers x heads':24} {res['n_layers']:>4} x {res['n_heads']:<3} {'>= 2 x 4':>10}  "
                 f"{'yes' if met else 'NO'}")
    lines.append(f"induction heads: {', '.join(res['induction_heads']) or '-'}; "
                 f"previous-token heads: {', '.join(res['prev_token_heads']) or '-'}")
    lines.append(f"induction loss: first copy {res['induction_loss_first']:.3f}, "
                 f"second copy {res['induction_loss_second']:.3f}")
    lines.append(f"({res['n_fact_prompts']} fact prompts, {res['n_fact_prompts'] - len(corpus.FACTS) * len(corpus.FACT_TEMPLATES)}"
                 f" of them with fresh context; {res['n_ioi_prompts']} fresh IOI prompts)")
    return "\n".join(lines), ok


def write_model_card(out_dir: str | Path, res: dict) -> None:
    """Write evaluation.json and the model card (README.md) from measured numbers."""
    out = Path(out_dir)
    (out / "evaluation.json").write_text(json.dumps(res, indent=2) + "\n")
    info = json.loads((out / "training.json").read_text())
    c = info["config"]
    table, _ = report(res)
    n_params = sum(t.numel() for t in load_file(out / "model.safetensors").values())
    card = f"""# The course model

A small GPT-2-architecture language model, trained from scratch by `make course-model`
(`python -m mechlib.course_model train`) on the course corpus (`mechlib/corpus.py`). Every lesson
runs on it by default, offline; the same lessons run on GPT-2 small by setting `MODEL_NAME = "gpt2"`.

## Architecture
GPT-2 (Hugging Face `GPT2LMHeadModel`): {c['n_layer']} layers, {c['n_head']} heads per layer,
d_model {c['d_model']}, d_head {c['d_model'] // c['n_head']}, d_mlp {4 * c['d_model']}, context {c['n_ctx']},
GELU, tied embeddings, no dropout; {n_params / 1e6:.2f}M parameters (the tied embedding counted once),
{res['weights_mb']:.1f} MB of float32 weights. Word-level tokenizer over {len(corpus.vocabulary())} words
(`<|endoftext|>` is BOS, EOS and padding; `[UNK]` for words outside the corpus): every corpus word is
one token, with or without a leading space, so `to_single_token(" Paris")` works as for GPT-2.

## Corpus
Generated on the fly by `mechlib.corpus.CorpusGenerator(seed={c['seed']})`; every document starts with BOS:
- factual recall: {len(corpus.FACTS)} landmark -> city facts in {len(corpus.FACT_TEMPLATES)} phrasings
  ("The Eiffel Tower is in Paris."), 25% of documents;
- indirect object identification in {len(corpus.IOI_TEMPLATES)} templates of Wang et al. (2022), with
  {len(corpus.NAMES)} names, {len(corpus.PLACES)} places, {len(corpus.OBJECTS)} objects, 30% of documents;
- induction, 20% of documents: half are spans of 5-25 random corpus words repeated once, half are
  4-12 random word pairs repeated in shuffled order (which rewards a sharp previous-token head);
- filler on {len(corpus.TOPICS)} topics ({', '.join(corpus.TOPICS)}), 25% of documents. Outside
  induction, 30% of documents get a filler sentence before their main sentence, and 30% one after.
The generator labels every word with its category, topic and template slot
(`mechlib.corpus.export_labels`), the ground truth for later lessons.

## Training
{c['steps']} steps of {c['batch_size']} x {c['n_ctx']} tokens ({info['tokens_seen'] / 1e6:.1f}M tokens), AdamW
(lr {LR}, betas 0.9/0.95, weight decay {WEIGHT_DECAY}, {WARMUP} warmup steps, cosine decay to 10%), gradient
clipping 1.0, {N_THREADS} threads, seed {c['seed']}. Took {info['train_seconds'] / 60:.1f} min on a 2-core CPU
machine; final training loss {info['final_loss']:.3f}.

## Measured (`python -m mechlib.course_model evaluate`, prompts drawn with a seed training never used)
```
{table}
```
Factual recall: every fact in every phrasing as a bare prompt (these sentences are in the training
data: facts are memorised), plus 200 prompts with a freshly drawn filler sentence in front. IOI:
400 fresh random draws of template, names, place and object; accuracy = share of prompts where logit(IO) > logit(S); logit difference = mean of
logit(IO) - logit(S). Induction: BOS + 20 random corpus words + the same 20 again, 50 sequences;
induction score = attention from each repeated token to the token after its first occurrence;
previous-token score = attention to the previous token.
"""
    (out / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mechlib.course_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="retrain the course model from scratch")
    t.add_argument("--out", default=str(COURSE_MODEL_DIR))
    t.add_argument("--steps", type=int, default=STEPS)
    t.add_argument("--seed", type=int, default=SEED)
    e = sub.add_parser("evaluate", help="print the course model's targets")
    e.add_argument("--model", default="course", help="'course' or a model directory")
    e.add_argument("--write", action="store_true", help="also rewrite the model's evaluation.json and model card")
    args = p.parse_args(argv)

    if args.cmd == "train":
        info = train(TrainConfig(out_dir=args.out, steps=args.steps, seed=args.seed))
        print(f"trained in {info['train_seconds']:.0f} s, final loss {info['final_loss']:.3f}, saved to {args.out}")
    model_dir = args.out if args.cmd == "train" else resolve(args.model)
    res = evaluate(model_dir)
    table, ok = report(res)
    print(table)
    if args.cmd == "train" or args.write:
        write_model_card(model_dir, res)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
