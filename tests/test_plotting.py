import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mechlib.plotting import attention_browser, attention_pattern, bar, head_heatmap, heatmap  # noqa: E402


def teardown_function():
    plt.close("all")


def test_head_heatmap_labels_layers_and_heads():
    fig = head_heatmap(torch.arange(8.0).reshape(2, 4) - 4, "scores")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["H0", "H1", "H2", "H3"]
    lo, hi = ax.images[0].get_clim()
    assert lo == -hi == -4  # centred on zero
    assert ax.get_title() == "scores"


def test_bar_colours_negative_values_red():
    fig = bar(torch.tensor([1.0, -2.0, 0.5]), ["a", "b", "c"])
    colours = [p.get_facecolor() for p in fig.axes[0].patches]
    assert colours[1] != colours[0] == colours[2]


def test_attention_pattern_puts_tokens_on_both_axes():
    tokens = ["<|endoftext|>", "The", "Colosseum"]
    fig = attention_pattern(torch.eye(3), tokens)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == tokens == [t.get_text() for t in ax.get_yticklabels()]


@pytest.mark.parametrize("call", [
    lambda: heatmap(torch.zeros(3)),
    lambda: heatmap(torch.zeros(2, 2), ["a"], ["a", "b"]),
    lambda: bar(torch.zeros(3), ["a"]),
    lambda: attention_pattern(torch.zeros(2, 2), ["a", "b", "c"]),
])
def test_mismatched_shapes_are_clear_errors(call):
    with pytest.raises(ValueError):
        call()


def test_attention_browser_has_a_slider_per_axis():
    box = attention_browser(torch.rand(2, 3, 4, 4).softmax(-1), ["a", "b", "c", "d"])
    layer, head = box.children[0].children
    assert (layer.max, head.max) == (1, 2)
    head.value = 2  # redraws without error
