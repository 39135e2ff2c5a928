"""nnsight's remote path, run locally: remote="local" serialises the trace as NDIF would and runs it here."""

import torch

from mechlib.prompts import to_tokens


def test_remote_local_trace_gives_the_local_numbers(course_nnsight):
    model = course_nnsight
    tokens = to_tokens(model, "The Eiffel Tower is in")
    with model.trace(tokens):
        hidden = model.transformer.h[1].output.save()  # modules in forward order
        local = model.lm_head.output.save()
    with model.trace(tokens, remote="local"):
        remote_hidden = model.transformer.h[1].output.save()
        remote = model.lm_head.output.save()
    torch.testing.assert_close(remote, local)
    torch.testing.assert_close(remote_hidden, hidden)
    paris = model.tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    assert remote[0, -1].argmax().item() == paris  # a real prediction, not zeros


def test_remote_local_trace_with_an_intervention(course_nnsight):
    model = course_nnsight
    tokens = to_tokens(model, "The Eiffel Tower is in")
    with model.trace(tokens, remote="local"):
        model.transformer.h[3].mlp.output[:] = 0  # ablate the last MLP
        ablated = model.lm_head.output.save()
    with model.trace(tokens):
        clean = model.lm_head.output.save()
    assert (ablated - clean).abs().max() > 0.1
