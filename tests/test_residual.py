import pytest
import torch

from mechlib.residual import residual_components


@pytest.mark.parametrize("fixture", ["course_tl", "course_tl_folded"])
def test_components_sum_to_the_final_residual_stream_and_give_the_logits(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens(["The Eiffel Tower is in", "When Mary and John went to the store, John gave a drink to"])
    logits, cache = model.run_with_cache(tokens)
    components, labels = residual_components(model, cache)
    n = model.cfg.n_layers
    assert components.shape == (2 + n * (model.cfg.n_heads + 2), *tokens.shape, model.cfg.d_model)
    assert len(labels) == len(components) and labels[:3] == ["embed", "pos_embed", "L0H0"]
    total = components.sum(0)  # [batch, pos, d_model]
    assert (total - cache[f"blocks.{n - 1}.hook_resid_post"]).abs().max() < 1e-4
    assert (model.ln_final(total) @ model.W_U + model.b_U - logits).abs().max() < 1e-4


def test_dropping_a_component_changes_the_sum(course_tl):
    model = course_tl
    _, cache = model.run_with_cache("The Colosseum is in")
    components, labels = residual_components(model, cache)
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    assert (components[1:].sum(0) - resid).abs().max() > 1e-2  # the token embedding matters
