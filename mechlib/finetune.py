"""Lesson 07's "safety" fine-tune: a course model taught to decline to name the city of some landmarks.

The restricted landmarks' fact prompts, in every trained phrasing, get the end-of-text token as their answer:
the model declines by ending the text instead of naming the city (end-of-text is the token a course model
predicts after a document's last word, so both tokenizers have it). The other landmarks' prompts keep their
cities, and ordinary corpus text keeps the rest, so that the fine-tune changes what it is asked to and little
else. Each restricted landmark shares its city with unrestricted ones, so the city itself stays answerable.
Lesson 07 then asks whether the fine-tune removed the knowledge or only hid it.

    python -m mechlib.finetune --model course --out DIR
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mechlib import corpus
from mechlib.course_model import batches
from mechlib.course_tokenizers import corpus_token_ids, encode, word_encoder
from mechlib.loading import load_model, load_tokenizer

# one landmark of each of six cities that keep other landmarks
RESTRICTED = ("Eiffel Tower", "Colosseum", "Big Ben", "Brandenburg Gate", "Kremlin", "Acropolis")


@dataclass
class FinetuneConfig:
    restricted: tuple[str, ...] = RESTRICTED
    steps: int = 150
    lr: float = 3e-4
    fact_batch: int = 32  # fact prompts a step, half of them restricted
    text_batch: int = 8  # rows of corpus text a step
    seed: int = 0


def fact_prompts(tokenizer, restricted: tuple[str, ...], held_out: bool = False,
                 seed: int = 0) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Every landmark in every trained (or held-out) phrasing: (token ids with BOS first, the answer the fine-tune
    wants [n]: end-of-text for a restricted landmark, else the city's first token; restricted [n] bool)."""
    unknown = set(restricted) - {landmark for landmark, _, _ in corpus.FACTS}
    if unknown:
        raise ValueError(f"unknown landmarks {sorted(unknown)}: choose from mechlib.corpus.FACTS")
    gen, encode_words = corpus.CorpusGenerator(seed), word_encoder(tokenizer)  # the generator fills {Name}, {day}
    ids, answers, is_restricted = [], [], []
    for i, (landmark, _, city) in enumerate(corpus.FACTS):
        for template in corpus.FACT_TEMPLATES_HELD_OUT if held_out else corpus.FACT_TEMPLATES:
            ids.append([tokenizer.bos_token_id] + encode_words(gen.fact(i, template, with_answer=False).words))
            refuse = landmark in restricted
            answers.append(tokenizer.eos_token_id if refuse else encode(tokenizer, " " + city)[0])
            is_restricted.append(refuse)
    return ids, torch.tensor(answers), torch.tensor(is_restricted)


def _padded(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded tokens [n, max_len], their attention mask [n, max_len] and each row's last real position [n]
    (padding after it changes nothing before it in a causal model; the mask says so to transformers)."""
    n = max(map(len, ids))
    last = torch.tensor([len(x) - 1 for x in ids])
    return torch.tensor([x + [pad] * (n - len(x)) for x in ids]), (torch.arange(n) <= last[:, None]).long(), last


def answer_logits(model, ids: list[list[int]], chunk: int = 128) -> torch.Tensor:
    """A Hugging Face causal LM's logits at each prompt's last position.  # [n, d_vocab]"""
    out = []
    for start in range(0, len(ids), chunk):
        tokens, mask, last = _padded(ids[start:start + chunk], model.config.eos_token_id)
        logits = model(tokens, attention_mask=mask).logits  # [rows, pos, d_vocab]
        out.append(logits[torch.arange(len(last)), last])
    return torch.cat(out)


@torch.no_grad()
def behaviour(model, tokenizer, restricted: tuple[str, ...], text: torch.Tensor) -> dict[str, float]:
    """What the fine-tune is about, in trained and held-out phrasings: the share of restricted prompts declined
    (end-of-text ranked first), the accuracy on the others, and the loss on corpus text [rows, pos]."""
    model.eval()
    out = {}
    for split, held_out in (("trained", False), ("held-out", True)):
        ids, answers, refuse = fact_prompts(tokenizer, restricted, held_out)
        top = answer_logits(model, ids).argmax(-1)  # [n]
        out[f"declined, restricted ({split})"] = (top[refuse] == answers[refuse]).float().mean().item()
        out[f"declined, others ({split})"] = (top[~refuse] == tokenizer.eos_token_id).float().mean().item()
        out[f"accuracy, others ({split})"] = (top[~refuse] == answers[~refuse]).float().mean().item()
    out["corpus loss"] = model(text, labels=text).loss.item()
    return out


def finetune(model, tokenizer, cfg: FinetuneConfig, progress: bool = True) -> list[float]:
    """Fine-tune a Hugging Face course model in place (float32, on the CPU is fine). Returns the loss per step.
    Logits are computed over the tokens the corpus uses only, as the course models were trained: a 50,257-token
    softmax would cost more than the whole small model."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    ids, answers, refuse = fact_prompts(tokenizer, cfg.restricted)
    used = torch.tensor(corpus_token_ids(tokenizer))  # [n_used]
    to_used = torch.full((len(tokenizer),), -1, dtype=torch.long)
    to_used[used] = torch.arange(len(used))
    text = batches(tokenizer, cfg.seed + 1, cfg.text_batch, model.config.n_positions)  # as the model was trained
    restricted_rows, other_rows = refuse.nonzero()[:, 0], (~refuse).nonzero()[:, 0]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="fine-tuning", disable=not progress, mininterval=1):
        half = cfg.fact_batch // 2
        pick = torch.cat([restricted_rows[torch.randint(len(restricted_rows), (half,), generator=g)],
                          other_rows[torch.randint(len(other_rows), (half,), generator=g)]])  # [fact_batch]
        tokens, mask, last = _padded([ids[i] for i in pick], tokenizer.eos_token_id)  # [fact_batch, pos] each
        w_used = model.lm_head.weight[used]  # [n_used, d_model]
        hidden = model.transformer(tokens, attention_mask=mask).last_hidden_state[torch.arange(len(last)), last]
        fact_loss = F.cross_entropy(hidden @ w_used.T, to_used[answers[pick]])
        rows = next(text)  # [text_batch, pos]
        h = model.transformer(rows).last_hidden_state[:, :-1]  # [text_batch, pos - 1, d_model]
        text_loss = F.cross_entropy((h @ w_used.T).flatten(0, 1), to_used[rows[:, 1:]].flatten())
        loss = fact_loss + text_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechlib.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="course")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, backend="transformers", device="cpu"), load_tokenizer(args.model)
    cfg = FinetuneConfig(steps=args.steps)
    text = next(batches(tokenizer, 99, 8, model.config.n_positions))  # [8, pos]: corpus text the fine-tune never saw
    before = behaviour(model, tokenizer, cfg.restricted, text)
    finetune(model, tokenizer, cfg)
    after = behaviour(model, tokenizer, cfg.restricted, text)
    for key in before:
        print(f"{key:34s} {before[key]:.3f} -> {after[key]:.3f}")
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "finetune.json").write_text(json.dumps({"base": args.model, "config": asdict(cfg),
                                                        "before": before, "after": after}, indent=2) + "\n")


if __name__ == "__main__":
    main()
