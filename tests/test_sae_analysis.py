import matplotlib

matplotlib.use("Agg")

import html  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mechlib.concepts import CONCEPTS, labelled_tokens  # noqa: E402
from mechlib.sae import SAEConfig, make_sae  # noqa: E402
from mechlib.sae.analysis import (concept_matches, concepts_found, contexts_html, feature_browser,  # noqa: E402
                                  latent_activations, logit_effects, top_contexts)

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    return make_sae(SAEConfig(d_in=128, d_sae=64, architecture="topk", k=4)).eval()


@pytest.fixture(scope="module")
def labelled(course_tl):
    return labelled_tokens(course_tl.tokenizer, n_documents=12, seed=2)


def test_latent_activations_are_the_sae_on_the_hook(course_tl, sae, labelled):
    acts = latent_activations(sae, course_tl, HOOK, labelled.tokens, chunk=5)
    _, cache = course_tl.run_with_cache(labelled.tokens, names_filter=HOOK)
    assert acts.shape == labelled.tokens.shape + (64,)
    assert torch.allclose(acts, sae.encode(cache[HOOK]), atol=1e-5)


def test_top_contexts_find_the_peak_and_shade_it(course_tl, labelled):
    acts = torch.zeros(labelled.tokens.shape + (3,))
    acts[2, 10, 1], acts[2, 9, 1], acts[0, 4, 1] = 5.0, 1.0, 2.0
    contexts = top_contexts(acts, labelled.tokens, 1, course_tl, n=5, before=3, after=1)
    assert [c.activation for c in contexts] == [5.0, 2.0, 1.0]  # zeros are not contexts
    top = contexts[0]
    assert top.position == 3 and len(top.tokens) == 5 and top.acts[2:4] == [1.0, 5.0]
    assert top.tokens[3] == course_tl.to_str_tokens(labelled.tokens[2, 10:11])[0]
    page = contexts_html(contexts)
    assert page.count("<div") == 3 and "font-weight: bold" in page
    assert "never fires" in contexts_html(top_contexts(acts, labelled.tokens, 0, course_tl))


def test_logit_effects_read_the_unembedding(course_tl):
    sae = make_sae(SAEConfig(d_in=128, d_sae=4))
    paris = course_tl.to_single_token(" Paris")
    with torch.no_grad():
        sae.W_dec[2] = course_tl.W_U[:, paris]
    top, bottom = logit_effects(sae, course_tl, 2, n=3)
    assert top[0][0].strip() == "Paris" and top[0][1] > top[1][1] > bottom[0][1]


def test_concept_matches_score_latents_against_the_labels(labelled):
    acts = torch.zeros(labelled.tokens.shape + (3,))
    colour = CONCEPTS.index("colour")
    acts[..., 0] = (labelled.concept == colour).float()  # a perfect colour detector
    acts[..., 1] = ((labelled.concept == colour) | (labelled.concept == CONCEPTS.index("animal"))).float()
    matches = concept_matches(acts, labelled)
    assert matches[0].concept == "colour" and matches[0].precision == matches[0].recall == matches[0].f1 == 1.0
    assert matches[1].recall == 1.0 and matches[1].precision < 1.0
    assert matches[2].f1 == 0.0  # never fires
    found = concepts_found(matches)
    assert list(found) == ["colour"] and found["colour"].f1 == 1.0


def test_feature_browser_builds(course_tl, sae, labelled):
    acts = latent_activations(sae, course_tl, HOOK, labelled.tokens)
    matches = concept_matches(acts, labelled)
    browser = feature_browser(sae, course_tl, acts, labelled.tokens, matches)
    box = browser.widget()  # the live version: a slider over every live latent
    assert len(box.children) == 2
    alive = (acts > 0).flatten(0, -2).any(0)
    assert list(box.children[0].options) == alive.nonzero().flatten().tolist()
    static = html.unescape(browser.html())  # the static version: the best-matching latents, their data inline
    data = json.loads(static.split("const DATA=")[1].split(";\n")[0])
    shown = [int(d["header"].split("latent ")[1].split("<")[0]) for d in data["latents"]]
    assert len(shown) == min(40, int(alive.sum())) and all(alive[i] for i in shown)
    f1 = [matches[i].f1 for i in shown]
    assert f1 == sorted(f1, reverse=True) and f1[0] == max(m.f1 for m, a in zip(matches, alive) if a)
    first = data["latents"][0]
    assert sum(first["hist"]) == first["fires"] == int((acts[..., shown[0]] > 0).sum())
    assert first["contexts"][0]["activation"] == pytest.approx(float(acts[..., shown[0]].max()), abs=1e-3)


def test_the_static_feature_browser_says_so_in_a_browser_when_no_latent_fires(course_tl, sae, labelled):
    from browser import chromium, frame_with, need_browser, watched_page
    from mechlib.sae.analysis import feature_browser_html

    need_browser()
    acts = torch.zeros(*labelled.tokens.shape, sae.cfg.d_sae)
    static = feature_browser_html(sae, course_tl, acts, labelled.tokens)
    with chromium() as browser:
        w = watched_page(browser, "about:")
        w.page.set_content(static)
        frame = frame_with(w.page, "#out")
        assert frame.inner_text("#out") == "no latent fires on these tokens"
        assert "0 of 0 live latents" in frame.inner_text("body")
        assert not w.errors
