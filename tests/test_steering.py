"""mechlib.steering: vectors, hooks, the sweep, and their errors."""

import pytest
import torch

from mechlib.prompts import to_tokens
from mechlib.sae import ARCHITECTURES, SAE, SAEConfig, make_sae, train_sae
from mechlib.sae.io import load_sae, save_sae
from mechlib.steering import (add_vector, clamp_latent, generate, mean_activation, steering_sweep, steering_vector,
                              target_probability, text_loss)

HOOK = "blocks.3.hook_resid_pre"


def test_steering_vector_is_the_difference_of_means_at_the_last_position(course_tl):
    model = course_tl
    pos, neg = ["The Eiffel Tower is in", "The Louvre is in"], ["The Colosseum is in"]
    caches = {p: model.run_with_cache(p, names_filter=HOOK)[1][HOOK][0, -1] for p in pos + neg}
    want = (caches[pos[0]] + caches[pos[1]]) / 2 - caches[neg[0]]
    torch.testing.assert_close(steering_vector(model, pos, neg, HOOK), want)
    with pytest.raises(ValueError, match="no hook named"):
        mean_activation(model, pos, "blocks.3.hook_resid")
    with pytest.raises(ValueError, match="at least one"):
        mean_activation(model, [], HOOK)


def test_add_vector_touches_only_the_given_positions():
    act, vector = torch.randn(2, 5, 4), torch.randn(4)
    out = add_vector(vector, 2.0, positions=[1, -1])(act, None)
    torch.testing.assert_close(out[:, [1, 4]], act[:, [1, 4]] + 2 * vector)
    torch.testing.assert_close(out[:, [0, 2, 3]], act[:, [0, 2, 3]])
    torch.testing.assert_close(add_vector(vector, 0.0)(act, None), act)


def test_target_probability_batches_prompts_without_changing_any_prompt_result(course_bpe_tl):
    model = course_bpe_tl  # multi-token landmarks: the prompts have different token lengths
    prompts = ["The Eiffel Tower is in", "The Colosseum is in", "The Brandenburg Gate is in", "The Louvre is in"]
    assert len({to_tokens(model, p).shape[1] for p in prompts}) > 1
    paris = to_tokens(model, " Paris")[0, -1].item()
    hooks = [(HOOK, add_vector(torch.ones(model.cfg.d_model), 1.0, positions=[1]))]  # a position-dependent hook
    with torch.no_grad():
        alone = [model.run_with_hooks(to_tokens(model, p), fwd_hooks=hooks)[0, -1].softmax(-1)[paris] for p in prompts]
    assert target_probability(model, prompts, paris, hooks) == pytest.approx(torch.stack(alone).mean().item(), rel=1e-5)


def _trained_sae(arch: str) -> SAE:
    """A small SAE of `arch` trained for a few steps on sparse data, so its weights are not the initial ones."""
    g = torch.Generator().manual_seed(3)
    truth = torch.nn.functional.normalize(torch.randn(12, 6, generator=g), dim=-1)

    def batch():
        return (torch.rand(128, 12, generator=g) * (torch.rand(128, 12, generator=g) < 0.2)) @ truth * 4

    sae = make_sae(SAEConfig(d_in=6, d_sae=24, architecture=arch, k=3, l1_coefficient=0.05, l0_coefficient=0.01))
    train_sae(sae, batch, steps=40, lr=3e-3, progress=False)
    return sae.eval()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_clamp_latent_changes_the_activation_by_the_saes_own_decoding(arch, tmp_path):
    """After clamping, act moves by decode(z with the latent set) - decode(z): what the SAE itself says
    setting that latent means. Checked on the SAE trained in memory and on the same SAE loaded from disk."""
    trained = _trained_sae(arch)
    loaded = load_sae(save_sae(trained, tmp_path / arch))
    act = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(4)) * 4
    for sae in (trained, loaded):
        with torch.no_grad():
            z = sae.encode(act[:, -1])  # [batch, d_sae]
            latent = int(z.sum(0).argmax())  # one that fires, so "current" is not just 0
            z_set = z.clone()
            z_set[:, latent] = 3.0
            out = clamp_latent(sae, latent, 3.0, positions=[-1])(act, None)
            torch.testing.assert_close(out[:, -1] - act[:, -1], sae.decode(z_set) - sae.decode(z))
            torch.testing.assert_close(out[:, :-1], act[:, :-1])
    with pytest.raises(ValueError, match="outside"):
        clamp_latent(trained, 24, 1.0)


def test_sweep_at_coefficient_zero_is_the_unsteered_model(course_tl):
    model = course_tl
    paris = model.to_single_token(" Paris")
    prompts = ["The Colosseum is in", "Big Ben is in"]
    unrelated = to_tokens(model, ["The red cat ate the cheese .", "Mary plays the piano in Rome ."])
    vector = steering_vector(model, ["The Eiffel Tower is in"], ["The Colosseum is in"], HOOK)
    sweep = steering_sweep(model, prompts, paris, HOOK, lambda c: add_vector(vector, c), [0.0, 3.0], unrelated)
    assert sweep["coefficient"] == [0.0, 3.0]
    assert sweep["target probability"][0] == pytest.approx(target_probability(model, prompts, paris))
    assert sweep["loss on unrelated text"][0] == pytest.approx(text_loss(model, unrelated))
    assert sweep["target probability"][1] > sweep["target probability"][0]  # the vector pushes towards Paris


def test_generate_is_greedy_and_applies_hooks_at_every_step(course_tl):
    model = course_tl
    assert generate(model, "The Eiffel Tower is in", 1).strip() == "Paris"
    vector = steering_vector(model, ["The Colosseum is in"], ["The Eiffel Tower is in"], HOOK)
    steered = generate(model, "The Eiffel Tower is in", 2, [(HOOK, add_vector(vector, 3.0))])
    assert steered == generate(model, "The Eiffel Tower is in", 2, [(HOOK, add_vector(vector, 3.0))])
    assert not steered.strip().startswith("Paris")


def test_actadd_takes_a_prompt_pair_at_every_position_and_adds_it_at_the_front(course_tl):
    from mechlib.steering import add_at_front, prompt_difference

    model = course_tl
    d = prompt_difference(model, " Paris", " Rome", HOOK)  # [2, d_model]: BOS and the word
    assert d.shape == (2, model.cfg.d_model) and d[0].abs().max() == 0  # BOS is the same in both
    act = torch.randn(3, 5, model.cfg.d_model)
    out = add_at_front(d, 2.0)(act, None)
    torch.testing.assert_close(out[:, :2], act[:, :2] + 2.0 * d)
    assert torch.equal(out[:, 2:], act[:, 2:])  # the rest of the prompt is untouched
    with pytest.raises(ValueError, match="equal lengths"):
        prompt_difference(model, "The Eiffel Tower is in", "The Colosseum is in", HOOK)
    with pytest.raises(ValueError, match="fewer than"):
        add_at_front(d, 1.0)(torch.randn(1, 1, model.cfg.d_model), None)
