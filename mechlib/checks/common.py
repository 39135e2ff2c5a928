"""What every lesson's checks share: comparing results (`first_mismatch`), running a learner's function
against the reference (`run_check`), what a check returns (`Checked`), and the patching cases of lessons
04 and 05."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch


def first_mismatch(got: Any, want: Any, atol: float = 1e-4, rtol: float = 1e-4, where: str = "result") -> str:
    """"" if got matches want (tensors to atol/rtol, containers element by element), else what differs."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{where} should be a torch.Tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.is_floating_point() != want.is_floating_point():
            return f"{where} has dtype {got.dtype}, expected {want.dtype}"
        g, w = got.detach().cpu().to(want.dtype), want.detach().cpu()
        bad = ~torch.isclose(g, w, atol=atol, rtol=rtol)
        if want.is_floating_point():
            bad |= torch.isnan(g) & ~torch.isnan(w)
        if bad.any():
            idx = tuple(bad.nonzero()[0].tolist())
            return (f"{where}[{', '.join(map(str, idx))}] is {g[idx].item():.6g}, expected {w[idx].item():.6g} "
                    f"({int(bad.sum())} of {bad.numel()} entries differ)")
        return ""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return f"{where} should be a sequence of {len(want)} items, got {type(got).__name__}" + (
                f" of {len(got)}" if isinstance(got, (list, tuple)) else "")
        for i, (g, w) in enumerate(zip(got, want)):
            msg = first_mismatch(g, w, atol, rtol, f"{where}[{i}]")
            if msg:
                return msg
        return ""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{where} should be a dict with keys {sorted(want)}, got {sorted(got) if isinstance(got, dict) else type(got).__name__}"
        for k in want:
            msg = first_mismatch(got[k], want[k], atol, rtol, f"{where}[{k!r}]")
            if msg:
                return msg
        return ""
    if isinstance(want, float):
        if not isinstance(got, (int, float)) or abs(got - want) > atol + rtol * abs(want):
            return f"{where} is {got!r}, expected {want:.6g}"
        return ""
    return "" if got == want else f"{where} is {got!r}, expected {want!r}"


class Checked:
    """What a check returns: the function (or class) the cells below should use, and whether the check passed.

    It is the learner's own function, or, when the exercise was skipped (it raises NotImplementedError), mechlib's
    reference, so that the rest of the lesson still runs. Calling it calls that function; it is truthy only when
    the learner's function passed. In a lesson: `keep_top = check_keep_top(keep_top)`."""

    def __init__(self, fn: Callable, passed: bool, skipped: bool = False):
        self.fn, self.passed, self.skipped = fn, passed, skipped

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        state = "passed" if self.passed else "skipped: using mechlib's reference" if self.skipped else "failed"
        return f"<checked {getattr(self.fn, '__name__', 'function')}: {state}>"


def skipped(name: str, fallback: Callable) -> Checked:
    """The learner has not written `name` yet: say so, and hand the cells below mechlib's reference."""
    qualname = getattr(fallback, "__qualname__", "<locals>")
    where = "" if "<locals>" in qualname else f" ({fallback.__module__}.{qualname})"  # a name worth reading
    print(f"✗ {name}: not implemented yet. Replace the `raise NotImplementedError` with your code; until then "
          f"the cells below use mechlib's reference{where}.")
    return Checked(fallback, passed=False, skipped=True)


def run_check(name: str, learner_fn: Callable, reference_fn: Callable, cases: Iterable[Sequence[Any]],
              hint: str = "", atol: float = 1e-4, rtol: float = 1e-4, fallback: Callable | None = None,
              learner: Callable | None = None) -> Checked:
    """Call learner_fn(*case) and reference_fn(*case) for each case; print a pass or the first mismatch.

    Returns a Checked holding what later cells should call: `learner` (default learner_fn), or `fallback`
    (default reference_fn: give one when the reference's signature differs from the learner's) if it was skipped."""
    learner, fallback = learner or learner_fn, fallback or reference_fn
    n = 0
    for n, case in enumerate(cases, 1):
        try:
            got = learner_fn(*case)
        except NotImplementedError:
            return skipped(name, fallback)
        except Exception as e:  # the learner's bug: report it, don't crash the notebook
            print(f"✗ {name}: your function raised {type(e).__name__}: {e}" + (f"\n  hint: {hint}" if hint else ""))
            return Checked(learner, False)
        msg = first_mismatch(got, reference_fn(*case), atol, rtol)
        if msg:
            print(f"✗ {name}: on test input {n}, {msg}." + (f"\n  hint: {hint}" if hint else ""))
            return Checked(learner, False)
    print(f"✓ {name}: passed on {n} test input{'s' if n != 1 else ''}.")
    return Checked(learner, True)


def patching_cases(model) -> list[tuple]:
    """(clean tokens, corrupted tokens, metric) for a TransformerLens or an nnsight model, built with the model's
    own tokenizer so that every pair has equal lengths: the Eiffel Tower and a landmark of as many tokens, with
    the normalised logit difference, and a batch of IOI prompts with the raw one (whose baseline isn't 0)."""
    from mechlib.components import component_cache
    from mechlib.patching import logit_diff, normalized
    from mechlib.prompts import answer_ids, fact_pair, ioi_prompts, to_tokens

    cases = []
    for pairs, scaled in [(fact_pair(model, "Eiffel Tower"), True),
                          (ioi_prompts(model, 4, template=3, corruption="s2_io", seed=11), False)]:
        clean, corrupted = to_tokens(model, pairs.clean), to_tokens(model, pairs.corrupted)
        metric = logit_diff(answer_ids(model, pairs.answers), answer_ids(model, pairs.wrongs))
        if scaled:
            logits = [component_cache(model, t, "resid_pre")[0] for t in (clean, corrupted)]
            metric = normalized(metric, *logits)
        cases.append((clean, corrupted, metric))
    return cases
