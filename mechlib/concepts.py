"""Ground truth for interpretability: the corpus knows which concept every word belongs to.

`labelled_tokens` turns corpus text into token ids with a concept per token, for any tokenizer (the
course model's word-level one, or GPT-2's). `concept_scores` then measures how well a unit (an MLP
neuron, an SAE feature) picks out each concept: the precision and recall of "the unit fires" as a
detector of "this token is a <concept>". Lesson 02 counts polysemantic neurons with it; lesson 03
checks SAE features against the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechlib.corpus import CorpusGenerator, detokenize

# Word categories the corpus labels, and the broader theme each belongs to. Concepts in one group
# are related (a dog and dogs; 3 and three), so a unit that fires for both is not polysemantic.
CONCEPT_GROUPS: dict[str, str] = {
    "animal": "animals", "animals": "animals",
    "food": "food", "meal": "food", "taste": "food",
    "digit": "numbers", "number": "numbers",
    "day": "time", "month": "time",
    "city": "places", "landmark": "places", "place": "places",
    "colour": "colour", "weather": "weather", "job": "job", "sport": "sport",
    "instrument": "music", "name": "name", "object": "object",
}
CONCEPTS: list[str] = sorted(CONCEPT_GROUPS)


@dataclass
class LabelledTokens:
    """Token ids with a ground-truth concept for each token."""

    tokens: torch.Tensor  # [batch, pos] token ids, BOS first, padded at the end
    concept: torch.Tensor  # [batch, pos] index into CONCEPTS; -1 for function words, punctuation, BOS
    mask: torch.Tensor  # [batch, pos] True for real tokens after BOS (False for BOS and padding)
    texts: list[str]

    @property
    def flat_concept(self) -> torch.Tensor:
        """The concepts of the real tokens, in the order `acts[mask]` gives them.  # [token]"""
        return self.concept[self.mask]


def concept_documents(n_documents: int, seed: int = 0, sentences: int = 6) -> list:
    """Documents of `sentences` sentences each: mostly filler on every topic, some facts and IOI."""
    gen = CorpusGenerator(seed)
    docs = []
    for _ in range(n_documents):
        doc = gen.filler()
        for _ in range(sentences - 1):
            r = gen.rng.random()
            doc.extend(gen.fact() if r < 1 / 6 else gen.ioi() if r < 2 / 6 else gen.filler())
        docs.append(doc)
    return docs


def labelled_tokens(tokenizer, n_documents: int = 200, seed: int = 0, max_len: int = 128) -> LabelledTokens:
    """Corpus documents as token ids [batch, pos] with each token's concept.

    A token takes the concept of the word its last character belongs to, so a word split into
    several tokens (GPT-2) labels each of them. Documents longer than max_len tokens (BOS included)
    are cut there. Needs a fast (offset-mapping) Hugging Face tokenizer.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("labelled_tokens needs a fast Hugging Face tokenizer (one that returns offset "
                         "mappings); load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    rows, labels, texts = [], [], []
    for doc in concept_documents(n_documents, seed):
        text = detokenize(doc.words)
        word_at = [-1] * len(text)  # char -> index of the word it is in
        pos = 0
        for i, w in enumerate(doc.words):
            start = text.index(w, pos)
            word_at[start:start + len(w)] = [i] * len(w)
            pos = start + len(w)
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        ids, concepts = [bos], [-1]
        for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
            word = word_at[e - 1] if e > s else -1
            category = doc.category[word] if word >= 0 else ""
            ids.append(tok)
            concepts.append(CONCEPTS.index(category) if category in CONCEPT_GROUPS else -1)
        rows.append(ids[:max_len])
        labels.append(concepts[:max_len])
        texts.append(text)
    length = max(map(len, rows))
    tokens = torch.full((len(rows), length), pad)
    concept = torch.full((len(rows), length), -1)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, (ids, cs) in enumerate(zip(rows, labels)):
        tokens[b, :len(ids)] = torch.tensor(ids)
        concept[b, :len(cs)] = torch.tensor(cs)
        mask[b, 1:len(ids)] = True
    return LabelledTokens(tokens, concept, mask, texts)


def concept_onehot(concept: torch.Tensor, n_concepts: int = len(CONCEPTS)) -> torch.Tensor:
    """concept [token] (index, -1 for none) -> [token, concept] floats, all zero for unlabelled tokens."""
    return torch.nn.functional.one_hot(concept.clamp(min=0), n_concepts).float() * (concept >= 0)[:, None]


def concept_scores(active: torch.Tensor, concept: torch.Tensor,
                   n_concepts: int = len(CONCEPTS)) -> tuple[torch.Tensor, torch.Tensor]:
    """How well each unit's firing detects each concept.

    active [token, unit] (bool: the unit fires on the token), concept [token] (index, -1 for none)
    -> precision, recall, both [unit, concept]: P(concept | fires) and P(fires | concept).
    """
    if active.shape[0] != concept.shape[0]:
        raise ValueError(f"active has {active.shape[0]} tokens but concept has {concept.shape[0]}: "
                         "select both with the same mask (acts[labelled.mask], labelled.flat_concept)")
    concept = concept.to(active.device)
    onehot = concept_onehot(concept, n_concepts)  # [token, concept]
    active = active.float()
    hits = active.T @ onehot  # [unit, concept]: tokens of the concept the unit fires on
    precision = hits / active.sum(0).clamp(min=1)[:, None]
    recall = hits / onehot.sum(0).clamp(min=1)[None, :]
    return precision, recall


def f1_score(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
    return 2 * precision * recall / (precision + recall).clamp(min=1e-9)


def responds(recall: torch.Tensor, lift: torch.Tensor, min_recall: float = 0.5, min_lift: float = 3.0) -> torch.Tensor:
    """[unit, concept] bool: the unit fires on at least min_recall of the concept's tokens, and at least
    min_lift times as often as on tokens overall. recall, lift [unit, concept]."""
    return (recall >= min_recall) & (lift >= min_lift)


def position_strata(tokens: torch.Tensor, period_id: int, edges: tuple[int, ...] = (8, 16, 32, 64)) -> torch.Tensor:
    """A stratum per token for `controlled_lift`: whether the next token is "." (the last word of a sentence)
    crossed with a bucket of the position (1-8, 9-16, 17-32, 33-64, 65+). tokens [batch, pos] -> [batch, pos]"""
    before_period = torch.zeros_like(tokens, dtype=torch.long)
    before_period[:, :-1] = (tokens[:, 1:] == period_id).long()
    position = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens).contiguous()
    bucket = torch.bucketize(position, torch.tensor(edges, device=tokens.device), right=False)  # 0 .. len(edges)
    return before_period * (len(edges) + 1) + bucket


def controlled_lift(active: torch.Tensor, concept: torch.Tensor, strata: torch.Tensor,
                    n_concepts: int = len(CONCEPTS)) -> torch.Tensor:
    """How many times more often each unit fires on a concept's tokens than it would if it fired at its own rate
    in each stratum (position, end of sentence, ...) whatever the concept: recall / expected recall.

    A unit that fires on every last word of a sentence has a lift of about 1 for concepts that sit there, where
    the plain lift (against its rate over all tokens) would be high. active [token, unit] bool, concept [token],
    strata [token] (ints) -> [unit, concept]"""
    strata = strata.to(active.device)
    S = torch.nn.functional.one_hot(strata, int(strata.max()) + 1).float()  # [token, stratum]
    C = concept_onehot(concept.to(active.device), n_concepts)  # [token, concept]
    rate = (active.float().T @ S) / S.sum(0).clamp(min=1)  # [unit, stratum]: P(fires | stratum)
    where = (S.T @ C) / C.sum(0).clamp(min=1)  # [stratum, concept]: where each concept's tokens sit
    _, recall = concept_scores(active, concept, n_concepts)
    return recall / (rate @ where).clamp(min=1e-6)


def firing_share(active: torch.Tensor, concept: torch.Tensor, chosen: torch.Tensor,
                 n_concepts: int = len(CONCEPTS)) -> torch.Tensor:
    """The precision of a unit for a set of concepts: the share of its firing that is on tokens of the concepts
    chosen for it. active [token, unit] bool, concept [token], chosen [unit, concept] bool -> [unit]"""
    hits = active.float().T @ concept_onehot(concept.to(active.device), n_concepts)  # [unit, concept]
    return (hits * chosen.to(active.device)).sum(1) / active.float().sum(0).clamp(min=1)


def concept_groups_fired(recall: torch.Tensor, lift: torch.Tensor, min_recall: float = 0.5,
                         min_lift: float = 3.0) -> list[set[str]]:
    """For each unit, the concept groups it responds to (see `responds`). recall, lift [unit, concept]."""
    return [{CONCEPT_GROUPS[CONCEPTS[c]] for c in row.nonzero().flatten().tolist()}
            for row in responds(recall, lift, min_recall, min_lift)]
