import pytest
import torch

from mechlib.attention import induction_scores, previous_token_scores

N = 5  # span length: BOS + 5 + 5 = 11 positions


def fake_cache(kind_per_head):
    """A cache with one layer whose heads attend exactly as described ('induction', 'prev', 'bos')."""
    T = 2 * N + 1
    pattern = torch.zeros(2, len(kind_per_head), T, T)  # [batch, head, q, k]
    for h, kind in enumerate(kind_per_head):
        for q in range(T):
            if kind == "prev" and q >= 1:
                k = q - 1
            elif kind == "induction" and q >= N + 1:
                k = q - N + 1
            else:
                k = 0
            pattern[:, h, q, k] = 1.0
    return {"blocks.0.attn.hook_pattern": pattern, "blocks.1.attn.hook_pattern": pattern.flip(1)}


def test_scores_find_the_right_heads():
    cache = fake_cache(["induction", "prev", "bos"])
    ind, prev = induction_scores(cache, N), previous_token_scores(cache)
    assert ind.shape == prev.shape == (2, 3)
    assert ind[0].tolist() == [1.0, 0.0, 0.0] and ind[1].tolist() == [0.0, 0.0, 1.0]
    assert prev[0].tolist() == [0.0, 1.0, 0.0]


def test_wrong_length_and_missing_patterns_are_errors():
    with pytest.raises(ValueError, match="BOS"):
        induction_scores(fake_cache(["induction"]), N + 1)
    with pytest.raises(ValueError, match="hook_pattern"):
        previous_token_scores({"blocks.0.hook_resid_post": torch.zeros(1)})
