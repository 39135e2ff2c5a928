"""Checks of lesson 07's exercises (probes and model diffing)."""

from __future__ import annotations

from typing import Callable

import torch

from mechlib.checks.common import Checked, run_check, skipped


def check_control_task(control_task: Callable) -> Checked:
    """control_task(types [n], labels [n], seed) -> control labels [n].

    Its draws are random, so it is checked by what Hewitt & Liang's control task must be: one label per type,
    labels the task has, in the task's proportions across types, the same for the same seed, and not the task."""
    from mechlib.probes import control_labels

    name = "control task"
    g = torch.Generator().manual_seed(7)
    types = torch.randint(4000, (20000,), generator=g)  # [n]
    labels = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), 4000, replacement=True, generator=g)[types]  # a type's label
    try:
        got = control_task(types, labels, 0)
    except NotImplementedError:
        return skipped(name, control_labels)
    except Exception as e:
        print(f"✗ {name}: your function raised {type(e).__name__}: {e}")
        return Checked(control_task, False)
    problems = []
    if not isinstance(got, torch.Tensor) or got.shape != labels.shape:
        problems.append(f"it should return a tensor of shape {tuple(labels.shape)}, one label per row")
    else:
        distinct, index = types.unique(return_inverse=True)
        first = torch.full((len(distinct),), -1, dtype=got.dtype).scatter_(0, index.flip(0), got.flip(0))
        share = torch.bincount(first.long().clamp(min=0), minlength=3)[:3].float() / len(distinct)
        if not torch.equal(first[index], got):
            problems.append("rows of the same type get different labels: draw one label per type, keep it everywhere")
        elif not torch.isin(got, labels.unique()).all():
            problems.append("some labels are not labels of the task: draw from the task's labels")
        elif (share - torch.tensor([0.6, 0.3, 0.1])).abs().max() > 0.05:
            problems.append(f"the labels' shares across types are {share.tolist()}, the task's 0.6/0.3/0.1: draw "
                            "each type's label from the task's label distribution (e.g. pick a random row's label)")
        elif not torch.equal(control_task(types, labels, 0), got):
            problems.append("two calls with the same seed differ: use a torch.Generator seeded with `seed`")
        elif (got == labels).float().mean() > 0.7:
            problems.append("it agrees with the task's labels almost everywhere: the control task draws labels at "
                            "random, ignoring the task's label of the type")
    if problems:
        print(f"✗ {name}: {problems[0]}.")
        return Checked(control_task, False)
    print(f"✓ {name}: passed (one label per type, the task's proportions, reproducible).")
    return Checked(control_task, True)


def check_project_out(project_out: Callable) -> Checked:
    """project_out(basis [k, d_model], positions [batch] or None) -> hook(act [batch, pos, d_model], hook)."""
    from mechlib.probes import project_out as reference

    g = torch.Generator().manual_seed(8)
    act = torch.randn(3, 6, 16, generator=g)
    basis = torch.linalg.qr(torch.randn(16, 3, generator=g)).Q.T  # [3, 16] orthonormal rows
    cases = [(basis, torch.tensor([5, 2, 0]), act), (basis[:1], None, act), (basis, torch.tensor([1, 1, 4]), act)]
    original = act.clone()

    def run(make, basis, positions, act):
        out = make(basis, positions)(act.clone(), None)
        if not torch.equal(act, original):
            raise ValueError("the check's input changed: don't modify the tensors it passes")
        return out

    return run_check("project out a subspace", lambda *c: run(project_out, *c), lambda *c: run(reference, *c), cases,
                     learner=project_out, fallback=reference,
                     hint="at each row's position, x - (x @ basis.T) @ basis (every position when positions is None), "
                          "on a copy of act")


def check_logit_lens(lens: Callable, model) -> Checked:
    """lens(model, resid [..., d_model], token_ids) -> logits [..., n_tokens], as model_diff.lens_logits."""
    from mechlib.model_diff import lens_logits

    g = torch.Generator().manual_seed(9)
    d, device = model.cfg.d_model, model.cfg.device
    scale = model.W_E.norm(dim=-1).mean().item()  # residual streams of the model's own scale
    cases = [(model, torch.randn(5, d, generator=g).to(device) * scale, [1, 2, 3]),
             (model, torch.randn(2, 3, d, generator=g).to(device) * 4 * scale, list(range(10, 20)))]
    return run_check("logit lens", lens, lens_logits, cases,
                     hint="model.ln_final(resid) (it takes [batch, pos, d_model]: add a position axis), then "
                          "@ model.W_U[:, ids] + model.b_U[ids]")


def check_own_tokens(own_tokens: Callable, tokenizer) -> Checked:
    """own_tokens(tokenizer, landmarks) -> sorted ids of the names' tokens no other corpus word uses."""
    from mechlib.finetune import RESTRICTED
    from mechlib.unlearning import name_tokens

    cases = [(tokenizer, RESTRICTED), (tokenizer, ("Eiffel Tower",)), (tokenizer, ("Kremlin", "Big Ben", "Louvre"))]

    def as_tensor(fn):
        return lambda tok, landmarks: torch.tensor(sorted(fn(tok, landmarks)), dtype=torch.long)

    return run_check("a name's own tokens", as_tensor(own_tokens), as_tensor(name_tokens), cases,
                     learner=own_tokens, fallback=name_tokens,
                     hint="tokens of every word of corpus.vocabulary(without=landmarks)[2:], with and without a leading "
                          "space, form the set to leave out of the names' tokens")
