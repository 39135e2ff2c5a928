"""Every fact prompt of the corpus as token rows with their labels: which landmark, which city, which phrasing,
and where the subject ends. Lesson 07 probes and diffs models on them; the refusal fine-tune trains on them.

    facts = fact_prompts(model.tokenizer)        # 42 landmarks x 12 phrasings (9 trained, 3 held out)
    facts.tokens[facts.held_out]                 # [n, pos], right-padded with end-of-text
    facts.subject, facts.last                    # [n] each: the landmark's last token, the prompt's last token

Rows are right-padded: in a causal model padding after a position changes nothing at or before it, so one
batch holds prompts of every length, read at their own positions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from mechlib import corpus
from mechlib.course_tokenizers import encode, spaced_pieces
from mechlib.loading import model_device
from mechlib.model_diff import logits_at

PHRASINGS = corpus.FACT_TEMPLATES + corpus.FACT_TEMPLATES_HELD_OUT  # trained first, then held out


@dataclass
class FactPrompts:
    """Fact prompts and their labels, one row each (tensors on the CPU)."""

    tokens: torch.Tensor  # [n, pos] BOS first, right-padded with end-of-text
    subject: torch.Tensor  # [n] position of the landmark's last token
    last: torch.Tensor  # [n] position of the prompt's last token ("in"), where the city is predicted
    landmark: torch.Tensor  # [n] index into corpus.FACTS
    city: torch.Tensor  # [n] index into corpus.CITIES
    answer: torch.Tensor  # [n] token id of the city's first token
    phrasing: torch.Tensor  # [n] index into PHRASINGS
    texts: list[str]

    @property
    def held_out(self) -> torch.Tensor:
        """[n] bool: a phrasing the course models never saw in training."""
        return self.phrasing >= len(corpus.FACT_TEMPLATES)

    def about(self, landmarks: tuple[str, ...] | list[str]) -> torch.Tensor:
        """[n] bool: rows about one of these landmarks (names as in corpus.FACTS)."""
        known = {name for name, _, _ in corpus.FACTS}
        unknown = sorted(set(landmarks) - known)
        if unknown:
            raise ValueError(f"unknown landmarks {unknown}: choose from mechlib.corpus.FACTS")
        index = torch.tensor([i for i, (name, _, _) in enumerate(corpus.FACTS) if name in landmarks])
        return torch.isin(self.landmark, index)

    def shared_city(self) -> torch.Tensor:
        """[n] bool: rows whose city has more than one landmark (a probe can be tested on an unseen landmark)."""
        counts = torch.tensor([sum(c == city for _, _, c in corpus.FACTS) for _, _, city in corpus.FACTS])
        return counts[self.landmark] > 1

    def __getitem__(self, rows: torch.Tensor) -> "FactPrompts":
        """The rows where a bool mask [n] is True (or at indices), padding trimmed to the longest kept row."""
        index = rows.nonzero()[:, 0] if rows.dtype == torch.bool else rows
        kept = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "texts"}
        kept["tokens"] = kept["tokens"][:, :int(kept["last"].max()) + 1]
        return FactPrompts(**kept, texts=[self.texts[i] for i in index.tolist()])

    def __len__(self) -> int:
        return len(self.texts)


def fact_prompts(tokenizer, seed: int = 0) -> FactPrompts:
    """Every landmark of corpus.FACTS in every phrasing, trained and held out, without the answer; names and days
    are filled by corpus.CorpusGenerator(seed). Each word is encoded as the course models were trained on it."""
    gen = corpus.CorpusGenerator(seed)
    rows, labels, texts = [], [], []
    for p, phrasing in enumerate(PHRASINGS):
        for i, (_, _, city) in enumerate(corpus.FACTS):
            doc = gen.fact(i, phrasing, with_answer=False)
            ids, subject = [tokenizer.bos_token_id], None
            for piece, category in zip(spaced_pieces(doc.words), doc.category):
                ids += encode(tokenizer, piece)
                if category == "landmark":
                    subject = len(ids) - 1
            rows.append(ids)
            labels.append((subject, len(ids) - 1, i, corpus.CITIES.index(city), encode(tokenizer, " " + city)[0], p))
            texts.append(doc.text)
    width = max(map(len, rows))
    tokens = torch.tensor([ids + [tokenizer.eos_token_id] * (width - len(ids)) for ids in rows])  # [n, pos]
    subject, last, landmark, city, answer, phrasing = torch.tensor(labels).T
    return FactPrompts(tokens, subject, last, landmark, city, answer, phrasing, texts)


def answer_logits(model, facts: FactPrompts, fwd_hooks=(), chunk: int = 128) -> torch.Tensor:
    """Logits at each prompt's last position (right padding changes nothing there in a causal model), from a
    TransformerLens model (with optional fwd_hooks) or a Hugging Face one. Only the last positions are unembedded:
    every position's logits over GPT-2's 50,257 tokens would cost more than the rest of a small model. With hooks
    every prompt runs in one batch, as a hook may hold one value per row (project_out's positions).  # [n, d_vocab]"""
    device = model_device(model)
    chunk = len(facts) if fwd_hooks else chunk
    out = []
    for start in range(0, len(facts), chunk):
        rows = facts[torch.arange(start, min(start + chunk, len(facts)))]
        tokens = rows.tokens.to(device)
        if hasattr(model, "hook_dict"):  # TransformerLens
            out.append(logits_at(model, tokens, rows.last, fwd_hooks))
        else:  # Hugging Face: the body's last hidden state (final norm included), then the output embedding
            if fwd_hooks:
                raise ValueError("fwd_hooks are TransformerLens hooks: load the model with backend='transformer_lens'")
            rows_at = torch.arange(len(rows), device=device)
            hidden = model.base_model(tokens).last_hidden_state[rows_at, rows.last.to(device)]  # [rows, d_model]
            out.append(model.get_output_embeddings()(hidden))
    return torch.cat(out)
