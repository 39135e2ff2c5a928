import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mechlib.plotting import (attention_browser, attention_pattern, attribution_scatter, bar, head_heatmap,  # noqa: E402
                              heatmap)


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


def test_heatmaps_given_one_limit_share_one_colour_scale():
    small, large = torch.tensor([[0.1, -0.2]]), torch.tensor([[3.0, -1.0]])
    lim = max(small.abs().max(), large.abs().max()).item()
    clims = [head_heatmap(v, limit=lim).axes[0].images[0].get_clim() for v in (small, large)]
    assert clims[0] == clims[1] == (-3.0, 3.0)
    assert head_heatmap(small).axes[0].images[0].get_clim() == pytest.approx((-0.2, 0.2))  # without: its own scale


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


def test_attention_browser_has_a_slider_per_axis_live_and_static():
    patterns = torch.rand(2, 3, 4, 4).softmax(-1)
    browser = attention_browser(patterns, ["a", "b", "<c>", "d"])
    box = browser.widget()  # the live version
    layer, head = box.children[0].children
    assert (layer.max, head.max) == (1, 2)
    head.value = 2  # redraws without error
    static = html.unescape(browser.html())  # the static version: an iframe page holding every pattern
    assert 'id="layer" min="0" max="1"' in static and 'id="head" min="0" max="2"' in static
    data = json.loads(static.split("const DATA=")[1].split(";\n")[0])
    assert torch.allclose(torch.tensor(data["patterns"]), patterns, atol=5e-4)
    assert data["tokens"] == ["a", "b", "&lt;c&gt;", "d"]  # escaped: a token is text, not markup
    assert "http" not in static  # nothing to fetch
    with pytest.raises(ValueError, match="query, key"):
        attention_browser(patterns, ["a", "b"])


# ---------------------------------------------------------------- toy models
def test_feature_directions_draws_one_arrow_per_feature_per_panel():
    from mechlib.plotting import feature_directions

    W = torch.randn(3, 2, 5)
    fig = feature_directions(W, ["a", "b", "c"], importance=0.9 ** torch.arange(5.0))
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert all(len(ax.lines) == 5 for ax in fig.axes)
    with pytest.raises(ValueError, match="instance, 2, feature"):
        feature_directions(torch.randn(3, 4, 5), ["a", "b", "c"])


def test_superposition_bars_one_bar_per_feature():
    from mechlib.plotting import superposition_bars

    fig = superposition_bars(torch.rand(2, 7), torch.rand(2, 7), ["dense", "sparse"])
    assert [len(ax.patches) for ax in fig.axes] == [7, 7]


def test_phase_diagram_has_a_legend_entry_per_phase():
    from mechlib.plotting import phase_diagram

    phase = torch.tensor([[0, 1], [2, 2]])
    fig = phase_diagram(phase, torch.tensor([0.1, 10.0]), torch.tensor([1.0, 0.1]), ["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"


def test_dimensionality_scatter_leaves_out_unrepresented_features():
    from mechlib.plotting import dimensionality_scatter

    dims = torch.tensor([[1.0, 0.0, 0.5], [0.4, 0.4, 0.0]])
    fig = dimensionality_scatter(torch.tensor([1.0, 4.0]), dims, torch.tensor([0.8, 0.4]))
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 4  # the two zeros are not drawn
    assert "1/2" in [t.get_text() for t in ax.texts] and "2/5" in [t.get_text() for t in ax.texts]


def test_sae_plots_label_what_they_show():
    from mechlib.plotting import density_histogram, l0_fvu_scatter, training_curves

    metrics = {"a": {"L0": 16.0, "FVU": 0.1}, "b": {"L0": 40.0, "FVU": 0.2}}
    ax = l0_fvu_scatter(metrics, {"a": "here", "b": "shipped"})
    assert [t.get_text() for t in ax.texts] == ["a", "b"] and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["here", "shipped"]
    ax = density_histogram({"x": torch.tensor([0.0, 0.0, 0.01, 0.1])})
    assert ax.get_legend().get_texts()[0].get_text() == "x (50% dead)"
    fig = training_curves({"run": [{"step": 1, "dead": 0.0, "L0": 3.0, "FVU": 0.5}, {"step": 2, "dead": 0.1, "L0": 2.0, "FVU": 0.4}]})
    assert [a.get_title() for a in fig.axes] == ["dead fraction", "L0", "FVU"]
    plt.close("all")


def test_attribution_scatter_names_the_points_furthest_from_the_diagonal():
    real = torch.tensor([0.0, 0.5, 1.0, 0.2])
    approx = torch.tensor([0.0, 0.5, 0.3, 0.25])
    ax = attribution_scatter(real, approx, ["a", "b", "far", "near"], n_labels=2)
    assert [t.get_text() for t in ax.texts] == ["far", "near"]
    assert ax.get_title().startswith("Pearson r =")
    with pytest.raises(ValueError, match="labels"):
        attribution_scatter(real, approx, ["a"])
