"""The two course models: small GPT-2s trained on the course corpus, and the script that trains them.

    python -m mechlib.course_model train                      # retrain both (make course-model)
    python -m mechlib.course_model train --model course-bpe   # retrain one
    python -m mechlib.course_model evaluate                   # print both models' targets (make evaluate)

"course" has a word-level tokenizer (every word one token); "course-bpe" has GPT-2's own tokenizer and
another shape, so that no lesson can lean on one model's vocabulary or shape. Everything that defines a
model is a plain constant below, as in nanoGPT.

Both train their output over the tokens the corpus uses (`course_tokenizers.corpus_token_ids`) plus one
shared row for every other token of the vocabulary, whose logit counts once per token it stands for
(+ log n). The saved model copies that row to all n unused tokens, so its full-vocabulary softmax is
exactly the one trained: a 50,257-way softmax at the cost of a 1,046-way one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mechlib import corpus
from mechlib.course_tokenizers import build_tokenizer, corpus_token_ids, word_encoder, word_token_ids
from mechlib.loading import MODEL_DIRS, is_shipped
from mechlib.prompts import copy_losses


@dataclass
class TrainConfig:
    out_dir: str
    tokenizer: str = "word"  # "word" or "gpt2" (course_tokenizers)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    n_ctx: int = 128
    steps: int = 3000
    batch_size: int = 32  # rows of n_ctx tokens: 4096 tokens a step
    lr: float = 2e-3
    seed: int = 0
    dtype: str = "float32"  # of the saved weights; loading gives float32
    mixture: tuple[float, float, float] = corpus.MIXTURE  # shares of induction, IOI, fact documents (corpus.py)
    pos_init: str = "normal"  # how the learned position embeddings start: "normal" (GPT-2's) or "sinusoidal"


# --- the two models, each sized to train in under 30 minutes on 2 CPU cores ---
MODELS = {
    # 16 rows x 6800 steps, the tokens of 32 x 3400 (29.0 min on 2 idle cores) in twice the optimizer steps: induction
    # forms by step ~4000 and the previous-token head then sharpens (score 0.39 -> 0.87; 32 x 3400 ended before it
    # did). Its first 1000 steps took 243 s on 2 idle cores: 27.6 min for 6800 (the shipped run's training.json says
    # 65.5 min: it shared the cores with another job). On one thread the two run at the same pace per token.
    "course": TrainConfig(out_dir=str(MODEL_DIRS["course"]), tokenizer="word", n_layer=4, n_head=4, steps=6800,
                          batch_size=16),
    # GPT-2's vocabulary makes the embedding 50,257 x 128: 16-bit keeps the file small for learners cloning.
    # Measured on 2 idle cores, all with d_model 128 and lr 2e-3 (IOI, facts: make evaluate; the probe is the
    # copy-loss ratio of training.json):
    #   6 x 8, 2000 steps of 32 rows (27.8 min): IOI 0.49, no induction
    #   6 x 8 and 6 x 4, 16 rows: too slow per step to reach 6000 steps in 30 minutes
    #   4 x 8, 16 rows, 6000 steps (24.9 min, this one): IOI 0.995 on trained and held-out frames, facts
    #   0.998 / 1.000, induction ratio 0.125 on random spans of single-token words, as the corpus shows them
    #   (0.715 on spans of every trained token, word pieces included, which it never sees out of their words);
    #   but no previous-token head (0.26: its layer-0 heads smear over the last 4-5 tokens)
    #   the same at lr 3e-3 with more induction documents (1 thread, beside another run, 44 min; make evaluate):
    #     mixture 0.60 / 0.28 / 0.10: induction had not formed by step 5750 (ratio 0.71; stopped there)
    #     mixture 0.50 / 0.30 / 0.15: induction by step ~4000, previous-token head L1H6 0.60, induction 0.92,
    #     ratio 0.031, IOI 1.000 / 0.998, facts 1.000 / 1.000; but on 2 threads (make course-model), whose sums
    #     differ in the last bits, induction had still not formed by step 4000 (ratio 0.71): the recipe sat at the edge
    #   the same, with position embeddings that start as sinusoids (this one; 2 threads, 27.0 min): induction by
    #     step 3000 (ratio 0.14), previous-token heads L0H4, L1H2 0.91, induction 0.95, ratio 0.032, IOI 0.998 /
    #     1.000, facts 1.000 / 1.000. Checked with another seed and thread count (seed 1, 1 thread, beside other jobs):
    #     induction later (ratio 0.50 at step 4250) but every target met: prev-token 0.60, induction 0.80, ratio 0.12,
    #     IOI 0.955 / 0.928, logit diff 4.9 / 4.8, facts 1.000 / 1.000
    "course-bpe": TrainConfig(out_dir=str(MODEL_DIRS["course-bpe"]), tokenizer="gpt2", n_layer=4, n_head=8,
                              steps=6000, batch_size=16, lr=3e-3, dtype="float16", mixture=(0.50, 0.30, 0.15),
                              pos_init="sinusoidal"),
}
# --- training, shared ---
WARMUP = 100
WEIGHT_DECAY = 0.1
N_THREADS = 2  # measured: 1.5x faster than one thread at this size on 2 cores


def build_model(vocab_size: int, n_layer: int, n_head: int, d_model: int, n_ctx: int, bos: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_ctx, n_embd=d_model, n_layer=n_layer,
                     n_head=n_head, n_inner=4 * d_model, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=bos, eos_token_id=bos,
                     pad_token_id=bos)
    return GPT2LMHeadModel(cfg)


def sinusoids(n_ctx: int, d_model: int, std: float = 0.02) -> torch.Tensor:
    """The sine/cosine position code of Vaswani et al. (2017), scaled to GPT-2's init std.  # [n_ctx, d_model]

    Used only as the starting point of GPT-2's learned position embeddings: a shift by one position is then
    a fixed rotation of each sin/cos pair, so a previous-token head needs only a query-key rotation to form,
    rather than an embedding whose neighbours happen to be alike. The model stays a plain GPT-2."""
    pos = torch.arange(n_ctx, dtype=torch.float32)[:, None]  # [n_ctx, 1]
    freq = 10000 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)  # [d_model / 2]
    code = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).flatten(1)  # [n_ctx, d_model]
    return code * (std / code.std())


def batches(tokenizer, seed: int, batch_size: int, n_ctx: int,
            mixture: tuple[float, float, float] = corpus.MIXTURE) -> corpus.PackedTokenBatches:
    """Endless batches of packed training documents, each starting with BOS.  # [batch, n_ctx]"""
    encode_words = word_encoder(tokenizer)
    return corpus.PackedTokenBatches(lambda doc: encode_words(doc.words), tokenizer.bos_token_id, seed,
                                     batch_size, n_ctx, mixture)


def expand_vocabulary(compact, used: list[int], vocab_size: int, bos: int):
    """The model over the full vocabulary: trained rows where the corpus's tokens are, the shared row
    (the compact model's last) everywhere else."""
    c = compact.config
    full = build_model(vocab_size, c.n_layer, c.n_head, c.n_embd, c.n_positions, bos)
    state = compact.state_dict()
    wte = state["transformer.wte.weight"]  # [n_used (+1 shared), d_model]
    rows = wte[-1].repeat(vocab_size, 1) if len(wte) > len(used) else torch.zeros(vocab_size, wte.shape[1])
    rows[torch.tensor(used)] = wte[: len(used)]
    state["transformer.wte.weight"] = state["lm_head.weight"] = rows  # tied, as in GPT-2
    full.load_state_dict(state)
    return full.eval()


def train(cfg: TrainConfig, progress: bool = True, threads: int = N_THREADS) -> dict:
    """Train a course model from scratch and save it (HF format, with its tokenizer) to cfg.out_dir."""
    torch.manual_seed(cfg.seed)  # the corpus generator has its own seeded RNG
    torch.set_num_threads(threads)
    tokenizer = build_tokenizer(cfg.tokenizer, cfg.n_ctx)
    used = corpus_token_ids(tokenizer)  # [n_used] ids of the full vocabulary
    n_other = len(tokenizer) - len(used)
    to_compact = torch.full((len(tokenizer),), -1, dtype=torch.long)
    to_compact[torch.tensor(used)] = torch.arange(len(used))
    compact_bos = int(to_compact[tokenizer.bos_token_id])
    model = build_model(len(used) + (n_other > 0), cfg.n_layer, cfg.n_head, cfg.d_model, cfg.n_ctx, compact_bos)
    if cfg.pos_init == "sinusoidal":
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoids(cfg.n_ctx, cfg.d_model))
    elif cfg.pos_init != "normal":
        raise ValueError(f"pos_init {cfg.pos_init!r}: 'normal' or 'sinusoidal'")
    other_bias = torch.zeros(len(used) + (n_other > 0))  # the shared row stands for n_other tokens
    if n_other:
        other_bias[-1] = math.log(n_other)
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

    data = batches(tokenizer, cfg.seed, cfg.batch_size, cfg.n_ctx, cfg.mixture)
    # a progress probe: random spans of single-token words (as make evaluate), repeated; second copy's loss / first's
    n = min(20, (cfg.n_ctx - 1) // 2)  # span length: both copies fit the context
    words = to_compact[torch.tensor(word_token_ids(tokenizer))]  # [n_words] compact ids
    span = words[torch.randint(len(words), (8, n), generator=torch.Generator().manual_seed(cfg.seed + 1))]
    probe = torch.cat([torch.full((8, 1), compact_bos), span, span], dim=1)  # [8, 1 + 2n], compact ids

    def induction_ratio() -> float:
        with torch.no_grad():
            logp = (model(probe).logits + other_bias).log_softmax(-1)[:, :-1]  # [8, 2n, n_used + 1]
            nll = -logp.gather(-1, probe[:, 1:, None])[..., 0]  # [8, 2n]
        first, second = copy_losses(nll, n)
        return round((second / first).item(), 3)

    losses, induction = [], {}
    start = time.time()
    bar = tqdm(range(cfg.steps), desc=f"training {Path(cfg.out_dir).name}", disable=not progress, mininterval=2)
    for step in bar:
        tokens = to_compact[next(data)]  # [batch, n_ctx]; every corpus token is in `used`
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(tokens).logits + other_bias  # [batch, n_ctx, n_used + 1]
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 250 == 0 or step == cfg.steps - 1:
            induction[step] = induction_ratio()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", induction=induction[max(induction)])
    seconds = time.time() - start
    model.eval()
    full = expand_vocabulary(model, used, len(tokenizer), tokenizer.bos_token_id)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full.to(getattr(torch, cfg.dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "trained_tokens.json").write_text(json.dumps(used) + "\n")
    tail = losses[-50:]
    config = {k: v for k, v in asdict(cfg).items() if k != "out_dir"}
    info = dict(train_seconds=round(seconds, 1), initial_loss=round(losses[0], 4),
                final_loss=round(sum(tail) / len(tail), 4), tokens_seen=cfg.steps * cfg.batch_size * cfg.n_ctx,
                trained_tokens=len(used), threads=threads, config=config,
                induction_loss_ratio_by_step=induction)  # second copy / first copy: falls when induction heads form
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    from mechlib.course_eval import evaluate, report, write_model_card

    p = argparse.ArgumentParser(prog="python -m mechlib.course_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="retrain course models from scratch")
    t.add_argument("--model", choices=list(MODELS), action="append", help="which (default: both)")
    t.add_argument("--out", help="directory to save to (one model only; default: data/<model>)")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, default=N_THREADS, help=f"CPU threads (default {N_THREADS})")
    e = sub.add_parser("evaluate", help="print the course models' targets")
    e.add_argument("--model", action="append", help="'course', 'course-bpe' or a model directory (default: both)")
    e.add_argument("--write", action="store_true", help="also rewrite the model's evaluation.json and model card")
    args = p.parse_args(argv)

    names = args.model or list(MODELS)
    if args.cmd == "evaluate" and not args.model:  # the models that are in data/ (course-bpe may not be trained yet)
        for name in [n for n in names if not is_shipped(n)]:
            print(f"{name}: not trained yet (make course-model MODEL={name})")
            names.remove(name)
    ok = True
    for name in names:
        if args.cmd == "train":
            if args.out and len(names) > 1:
                p.error("--out needs one --model")
            cfg = replace(MODELS[name], **{k: v for k, v in dict(out_dir=args.out, steps=args.steps,
                                                                   seed=args.seed).items() if v is not None})
            info = train(cfg, threads=args.threads)
            print(f"{name}: trained in {info['train_seconds'] / 60:.1f} min, final loss {info['final_loss']:.3f}, "
                  f"saved to {cfg.out_dir}")
            model_dir = cfg.out_dir
        else:
            model_dir = str(MODEL_DIRS.get(name, name))
        res = evaluate(model_dir)
        table, met = report(res)
        print(f"\n{name} ({model_dir})\n{table}")
        ok &= met
        if args.cmd == "train" or args.write:
            write_model_card(model_dir, res)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
