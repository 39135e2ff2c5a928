"""Lesson 07's "safety" fine-tune: a course model taught to decline to name the city of some landmarks.

The restricted landmarks' fact prompts, in every trained phrasing, get the end-of-text token as their answer:
the model declines by ending the text instead of naming the city (end-of-text is the token a course model
predicts after a document's last word, so both tokenizers have it). The other landmarks' prompts keep their
cities, and ordinary corpus text keeps the rest, so that the fine-tune changes what it is asked to and little
else. Each restricted landmark shares its city with unrestricted ones, so the city itself stays answerable.
Lesson 07 then asks whether the fine-tune removed the knowledge or only hid it; `train_answers` (the one
training loop) also runs its relearning tests.

    python -m mechlib.finetune --model course --out DIR   # train, print what changed, save
    model = load_finetuned("course")                      # the shipped result (trained on first use elsewhere)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from mechlib.course_model import batches
from mechlib.course_tokenizers import corpus_token_ids
from mechlib.fact_prompts import FactPrompts, answer_logits, fact_prompts
from mechlib.files import read_safetensors, safetensors_metadata
from mechlib.loading import MODEL_DIRS, REPO_ROOT, cache_dir, load_model, load_tokenizer, wrap_model

# one landmark of each of six cities that keep other landmarks
RESTRICTED = ("Eiffel Tower", "Colosseum", "Big Ben", "Brandenburg Gate", "Kremlin", "Acropolis")
SHIPPED = REPO_ROOT / "data" / "finetuned"  # data/finetuned/<model>/: the fine-tune of each course model


@dataclass
class FinetuneConfig:
    restricted: tuple[str, ...] = RESTRICTED
    steps: int = 150
    lr: float = 3e-4
    fact_batch: int = 32  # fact prompts a step, half of them restricted
    text_batch: int = 8  # rows of corpus text a step
    seed: int = 0


def refusal_targets(tokenizer, restricted: tuple[str, ...], held_out: bool = False) -> tuple[FactPrompts, torch.Tensor, torch.Tensor]:
    """The fact prompts in trained (or held-out) phrasings, the answer the fine-tune wants [n] (end-of-text for a
    restricted landmark, else the city's first token) and which rows are restricted [n] bool."""
    facts = fact_prompts(tokenizer)
    facts = facts[facts.held_out == held_out]
    refuse = facts.about(restricted)  # raises for an unknown landmark
    return facts, torch.where(refuse, tokenizer.eos_token_id, facts.answer), refuse


@torch.no_grad()
def accuracy(model, facts: FactPrompts, answers: torch.Tensor) -> float:
    """Share of prompts whose top prediction is the given answer [n]."""
    model.eval()
    return (answer_logits(model, facts).argmax(-1).cpu() == answers).float().mean().item()


@torch.no_grad()
def behaviour(model, tokenizer, restricted: tuple[str, ...], text: torch.Tensor) -> dict[str, float]:
    """What the fine-tune is about, in trained and held-out phrasings: the share of restricted prompts declined
    (end-of-text ranked first), the accuracy on the others, and the loss on corpus text [rows, pos]."""
    model.eval()
    out = {}
    for split, held_out in (("trained", False), ("held-out", True)):
        facts, answers, refuse = refusal_targets(tokenizer, restricted, held_out)
        top = answer_logits(model, facts).argmax(-1).cpu()  # [n]
        out[f"declined, restricted ({split})"] = (top[refuse] == answers[refuse]).float().mean().item()
        out[f"declined, others ({split})"] = (top[~refuse] == tokenizer.eos_token_id).float().mean().item()
        out[f"accuracy, others ({split})"] = (top[~refuse] == answers[~refuse]).float().mean().item()
    out["corpus loss"] = model(text.to(model.device), labels=text.to(model.device)).loss.item()
    return out


def train_answers(model, tokenizer, facts: FactPrompts, answers: torch.Tensor, steps: int, lr: float = 3e-4,
                  batch: int = 32, weights: torch.Tensor | None = None, text_batch: int = 0, seed: int = 0,
                  progress: bool = False, every: int = 0, measure=None) -> list[float]:
    """Train a Hugging Face model in place to give answers [n] at the facts' last positions: prompts drawn
    with weights [n] (uniform if None), plus text_batch rows of corpus text a step. For a course model the logits
    cover only the tokens the corpus uses, as in its training (a 50,257-token softmax would cost more than the
    whole small model, and the other rows were never trained); any other model's softmax covers its whole
    vocabulary, since any of its tokens can win. Returns the loss per step, or, with every > 0 and
    measure(model) -> float, measure's value before step 1 and after every `every` steps."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = model.device
    n_vocab = model.lm_head.weight.shape[0]
    used = (torch.tensor(corpus_token_ids(tokenizer), device=device) if is_course_model(model)
            else torch.arange(n_vocab, device=device))  # [n_used]
    to_used = torch.full((n_vocab,), -1, dtype=torch.long, device=device)
    to_used[used] = torch.arange(len(used), device=device)
    text = batches(tokenizer, seed + 1, text_batch, model.config.n_positions) if text_batch else None
    weights = torch.ones(len(facts)) if weights is None else weights.float()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    trace = [measure(model)] if every else []
    with torch.enable_grad():  # also inside a lesson's torch.no_grad()
        model.train()
        for step in tqdm(range(1, steps + 1), desc="fine-tuning", disable=not progress, mininterval=1):
            pick = torch.multinomial(weights, batch, replacement=True, generator=g)  # [batch]
            rows = facts[pick]
            w_used = model.lm_head.weight[used]  # [n_used, d_model]
            hidden = model.transformer(rows.tokens.to(device)).last_hidden_state  # [batch, pos, d_model]
            last = hidden[torch.arange(len(rows), device=device), rows.last.to(device)]  # [batch, d_model]
            loss = F.cross_entropy(last @ w_used.T, to_used[answers[pick].to(device)])
            if text is not None:
                tokens = next(text).to(device)  # [text_batch, pos]
                h = model.transformer(tokens).last_hidden_state[:, :-1]  # [text_batch, pos - 1, d_model]
                loss = loss + F.cross_entropy((h @ w_used.T).flatten(0, 1), to_used[tokens[:, 1:]].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if every and step % every == 0:
                trace.append(measure(model))
                model.train()
            elif not every:
                trace.append(loss.item())
    model.eval()
    return trace


def is_course_model(model) -> bool:
    """Was this Hugging Face model loaded from a course model's directory (data/course-model, data/course-bpe)?"""
    course_dirs = {path.resolve() for path in MODEL_DIRS.values()}
    return Path(getattr(model.config, "_name_or_path", "") or ".").resolve() in course_dirs


def finetune(model, tokenizer, cfg: FinetuneConfig, progress: bool = True) -> list[float]:
    """The refusal fine-tune, in place (float32; a CPU is fine): half of each batch restricted prompts, half the
    others, plus corpus text. Returns the loss per step."""
    facts, answers, refuse = refusal_targets(tokenizer, cfg.restricted)
    weights = torch.where(refuse, 0.5 / refuse.sum(), 0.5 / (~refuse).sum())  # [n]: half restricted on average
    return train_answers(model, tokenizer, facts, answers, cfg.steps, cfg.lr, cfg.fact_batch, weights,
                         cfg.text_batch, cfg.seed, progress)


# ------------------------------------------------------------------ shipping: only what the fine-tune changed


def save_changes(model, base, path: Path) -> None:
    """Save to path/changes.safetensors the parameters of model that differ from base's: whole tensors, or for an
    embedding only its changed rows (the fine-tune never touches the tokens the corpus doesn't use: for
    GPT-2's 50,257-row vocabulary that keeps the file a tenth of the model's size)."""
    base_params = dict(base.named_parameters())
    out = {}
    for name, p in model.named_parameters():  # tied weights appear once
        p, q = p.detach().cpu(), base_params[name].detach().cpu()
        if torch.equal(p, q):
            continue
        rows = (p != q).reshape(len(p), -1).any(1) if p.ndim == 2 else None  # [rows]
        if rows is not None and not rows.all():
            out[f"{name}:rows"] = rows.nonzero()[:, 0]
            out[name] = p[rows].contiguous()
        else:
            out[name] = p.contiguous()
    path.mkdir(parents=True, exist_ok=True)
    save_file(out, path / "changes.safetensors", metadata={"base": _fingerprint(base)})


def _fingerprint(model) -> str:
    """A hash of the model's first parameter (the token embedding): which base model a set of changes is for."""
    first = next(iter(model.parameters())).detach().float().cpu()
    return hashlib.sha256(first.numpy().tobytes()).hexdigest()[:16]


def apply_changes(model, path: Path):
    """Write the changes saved by save_changes into model (its base), in place; returns model."""
    made_for = safetensors_metadata(path / "changes.safetensors").get("base")
    if made_for != _fingerprint(model):
        raise ValueError(f"{path} holds changes made for another model (or for other weights of this one): load "
                         "the base model it was made from, or remake it with `python -m mechlib.finetune`")
    changes = read_safetensors(path / "changes.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in changes.items():
            if name.endswith(":rows"):
                continue
            if name not in params:
                raise ValueError(f"{path} changes {name!r}, which this model lacks: it was made for another model")
            target = params[name]
            if f"{name}:rows" in changes:
                target[changes[f"{name}:rows"].to(target.device)] = value.to(target.device, target.dtype)
            elif target.shape != value.shape:
                raise ValueError(f"{path} has {name} of shape {tuple(value.shape)}, this model {tuple(target.shape)}: "
                                 "it was made for another model")
            else:
                target.copy_(value)
    return model


def load_finetuned(name: str = "course", backend: str = "transformer_lens", device: str | None = None,
                   progress: bool = True):
    """The refusal fine-tune of model `name`, for one backend (as load_model). The course models' ship in
    data/finetuned/; any other model's is made on first use (150 steps, about a minute on a CPU for the course
    models, more for larger ones) and cached in ~/.cache/mechlib/finetuned/ ($MECHLIB_CACHE/finetuned/)."""
    path = SHIPPED / name if (SHIPPED / name / "changes.safetensors").is_file() else cache_dir("finetuned") / name.replace("/", "--")
    tokenizer = load_tokenizer(name)
    if not (path / "changes.safetensors").is_file():
        model = load_model(name, backend="transformers", device=device)
        base = copy.deepcopy(model)
        finetune(model, tokenizer, FinetuneConfig(), progress=progress)
        save_changes(model, base, path)
        (path / "finetune.json").write_text(json.dumps({"base": name, "config": asdict(FinetuneConfig())}, indent=2))
    else:
        model = apply_changes(load_model(name, backend="transformers", device=device), path)
    return wrap_model(model.eval(), tokenizer, name, backend)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechlib.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="course")
    parser.add_argument("--out", type=Path, help=f"where to save the changes (default {SHIPPED}/<model>)")
    parser.add_argument("--steps", type=int, default=FinetuneConfig.steps)
    args = parser.parse_args(argv)
    out = args.out or SHIPPED / args.model
    model, tokenizer = load_model(args.model, backend="transformers", device="cpu"), load_tokenizer(args.model)
    base = copy.deepcopy(model)
    cfg = FinetuneConfig(steps=args.steps)
    text = next(batches(tokenizer, 99, 8, model.config.n_positions))  # [8, pos]: corpus text the fine-tune never saw
    before = behaviour(model, tokenizer, cfg.restricted, text)
    finetune(model, tokenizer, cfg)
    after = behaviour(model, tokenizer, cfg.restricted, text)
    for key in before:
        print(f"{key:34s} {before[key]:.3f} -> {after[key]:.3f}")
    save_changes(model, base, out)
    (out / "finetune.json").write_text(json.dumps({"base": args.model, "config": asdict(cfg), "before": before,
                                                   "after": after}, indent=2) + "\n")


if __name__ == "__main__":
    main()
