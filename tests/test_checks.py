import pytest
import torch

from mechlib.checks import first_mismatch, run_check


def reference(x):
    return x.cumsum(-1)


CASES = [(torch.arange(6.0).reshape(2, 3),), (torch.randn(4, 5, generator=torch.Generator().manual_seed(0)),)]


def test_the_reference_passes(capsys):
    assert run_check("cumsum", reference, reference, CASES)
    assert "✓ cumsum: passed on 2 test inputs" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, expected", [
    (lambda x: x.cumsum(0), "expected"),                        # wrong axis
    (lambda x: x.cumsum(-1)[..., :-1], "has shape (2, 2)"),       # off by one
    (lambda x: x.sum(-1), "has shape (2,)"),                      # forgot it is cumulative
    (lambda x: x.cumsum(-1).tolist(), "should be a torch.Tensor"),
    (lambda x: x.cumsum(-1) + 1e-2, "entries differ"),
])
def test_plausible_wrong_answers_fail_with_the_first_mismatch(wrong, expected, capsys):
    assert not run_check("cumsum", wrong, reference, CASES, hint="sum along the last axis")
    out = capsys.readouterr().out
    assert out.startswith("✗ cumsum") and expected in out and "hint: sum along the last axis" in out


def test_not_implemented_and_crashes_are_reported_not_raised(capsys):
    def stub(x):
        raise NotImplementedError

    assert not run_check("cumsum", stub, reference, CASES)
    assert "not implemented yet" in capsys.readouterr().out
    assert not run_check("cumsum", lambda x: x.nope(), reference, CASES)
    assert "raised AttributeError" in capsys.readouterr().out


def test_first_mismatch_on_containers_and_numbers():
    assert first_mismatch([1, (2.0, "a")], [1, (2.0, "a")]) == ""
    assert "result[1][0] is 2.5" in first_mismatch([1, (2.5, "a")], [1, (2.0, "a")])
    assert "keys" in first_mismatch({"a": 1}, {"b": 1})
    assert first_mismatch(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0])) != ""
    assert first_mismatch(torch.tensor([1, 2]), torch.tensor([1.0, 2.0])) != ""
