"""The fact's path through each course model, as lessons 01, 04, 05 and 06 tell it, checked in one place.

"The Eiffel Tower is in" -> " Paris", against a landmark of the same token length in another city
(prompts.fact_pair), scored by the normalised logit difference (1 = clean, 0 = corrupted). Denoising (clean
activations patched into the corrupted run) says what is *sufficient*, noising (the other way) what is
*necessary* (lesson 04; lesson 05 repeats the residual map in nnsight and tests its agreement). Direct logit
attribution (lesson 01) names what *writes* the answer, not where the fact comes from; ablation (lesson 06)
removes a carrier. The two models take different paths (the course model keeps the fact at the subject until
layer 3; course-bpe moves the landmark's first token to the end in layer 0), and each lesson asserts a path only
for its model.
"""

import pytest
import torch

from mechlib.components import run_cache
from mechlib.patching import logit_diff, normalized, patch
from mechlib.prompts import answer_ids, fact_pair, to_tokens
from mechlib.residual import direct_logit_attribution, residual_components


class Fact:
    """The pair, its metric and the patching maps lessons 04 and 05 draw."""

    def __init__(self, model):
        self.model, pair = model, fact_pair(model)
        self.clean, self.corrupted = to_tokens(model, pair.clean), to_tokens(model, pair.corrupted)
        self.subject = int(pair.positions["landmark"][0])
        answers, wrongs = answer_ids(model, pair.answers), answer_ids(model, pair.wrongs)
        self.clean_logits, self.cache = run_cache(model, self.clean)
        self.metric = normalized(logit_diff(answers, wrongs), self.clean_logits, run_cache(model, self.corrupted)[0])
        self.direction = model.W_U[:, answers[0]] - model.W_U[:, wrongs[0]]  # [d_model]

    def patch(self, component: str, direction: str = "denoise") -> torch.Tensor:
        return patch(self.model, self.clean, self.corrupted, self.metric, component, direction)

    def heads_at_end(self, direction: str = "denoise") -> dict[tuple[int, int], float]:
        by_pos = self.patch("head_out_by_pos", direction)[:, -1].tolist()  # [layer][head]
        return {(layer, head): v for layer, row in enumerate(by_pos) for head, v in enumerate(row)}

    def top_writer(self) -> str:
        """Lesson 01: the component whose direct logit attribution to the answer is largest."""
        components, labels = residual_components(self.model, self.cache)
        return labels[int(direct_logit_attribution(self.cache, components, self.direction)[:, 0].argmax())]


@pytest.fixture(scope="module")
def course(course_tl):
    return Fact(course_tl)


@pytest.fixture(scope="module")
def course_bpe(course_bpe_tl):
    return Fact(course_bpe_tl)


def test_course_the_fact_waits_at_the_subject_then_a_layer_3_head_carries_it_to_the_end(course):
    resid = course.patch("resid_pre")  # [layer, pos]
    s = course.subject
    assert (resid[:3, s] > 0.85).all() and (resid[:3, -1].abs() < 0.15).all()  # lesson 04: mostly at the subject
    assert resid[3, -1] > 0.3 and resid[3, s] + resid[3, -1] > 0.8  # layer 2 then moves part of it to the end
    assert (course.patch("resid_pre", "noise")[:3, s] < 0.25).all()  # the landmark's word is necessary
    assert course.patch("mlp_out")[0, s] > 0.8  # the layer-0 MLP at the subject restores most of it by itself
    movers = {head for head, v in course.heads_at_end().items() if v > 0.3}
    assert movers == {(3, 0)}  # lesson 04's head that restores most, in layer 3
    assert course.cache["blocks.3.attn.hook_pattern"][0, 0, -1, s] > 0.9  # it reads the subject from the end
    assert course.heads_at_end("noise")[3, 0] < 0.6  # it is needed: without it, under 60% of the answer remains


def test_course_the_last_mlp_writes_the_answer_from_what_the_heads_brought(course):
    assert course.top_writer() == "L3 MLP"  # lesson 01's direct logit attribution
    mlp_end = course.patch("mlp_out")[:, -1], course.patch("mlp_out", "noise")[:, -1]  # [layer] each
    assert mlp_end[0][3] > 0.8 and mlp_end[1][3] < 0.4  # sufficient and necessary at the last position
    # but it only writes: its input at the last position must carry the subject's information
    assert course.patch("resid_mid", "noise")[3, -1] < 0.4


def test_course_bpe_one_layer_0_head_moves_the_landmark_to_the_end_where_the_mlps_recall_it(course_bpe):
    resid, s = course_bpe.patch("resid_pre"), course_bpe.subject  # [layer, pos]
    landmark = (course_bpe.clean[0] != course_bpe.corrupted[0]).nonzero()[:, 0]  # " E", "iff", "el", " Tower"
    assert len(landmark) == 4 and resid[0, s] > 0.8 and resid[0, landmark[1:]].abs().max() < 0.15  # " E" carries it
    noised0 = course_bpe.patch("resid_pre", "noise")[0]
    assert noised0[s] < 0.3 and (noised0[landmark[1:]] > 0.85).all()  # " E" is necessary; the other three are not
    assert (resid[1:, -1] > 0.95).all() and resid[1:][:, landmark].abs().max() < 0.05  # from layer 1: at the end only
    movers = {head for head, v in course_bpe.heads_at_end().items() if v > 0.3}
    assert movers == {(0, 2)}  # lesson 04: one layer-0 head makes the jump
    assert course_bpe.cache["blocks.0.attn.hook_pattern"][0, 2, -1, s] > 0.7  # from the end it reads " E"
    assert course_bpe.heads_at_end("noise")[0, 2] < 0.3  # and it is needed
    mlp_end = course_bpe.patch("mlp_out")[:, -1], course_bpe.patch("mlp_out", "noise")[:, -1]  # [layer] each
    assert mlp_end[0][0] > 0.9 and mlp_end[1][0] < 0.1  # the layer-0 MLP at the end: sufficient and necessary
    assert (mlp_end[0][1:] > 0.3).all() and (mlp_end[1][1:] < 0.7).all()  # each later MLP adds, and is needed for, part
    assert course_bpe.top_writer() == "L0 MLP"  # lesson 01's direct logit attribution agrees
