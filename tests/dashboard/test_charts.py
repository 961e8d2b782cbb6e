"""dashboard.charts: the pure ``DataFrame -> plotly Figure`` builders, checked as Figure
objects (traces, their data, titles and axes), without Streamlit."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from dashboard import charts, charts_map


def test_data_map_figure_marks_flipped_labels_and_says_it_is_sampled():
    points = pd.DataFrame({
        "sample_id": [0, 1, 2, 3], "label": [1, 2, 3, 4], "original_label": [1, 2, 0, 4],
        "label_noisy": [False, False, True, False], "confidence": [0.9, 0.5, 0.1, 0.7],
        "variability": [0.05, 0.3, 0.1, 0.2], "color_value": [1.0, 0.5, 0.0, 0.8],
    })
    figure = charts.data_map_figure(points, "correctness", total=10, selected_sample=2)
    assert [trace.type for trace in figure.data] == ["scattergl"] * 3
    assert [len(trace.x) for trace in figure.data] == [3, 1, 1]
    assert figure.data[1].marker.symbol == "x"
    assert list(figure.data[0].customdata[:, 0]) == [0, 1, 3]
    assert figure.layout.xaxis.title.text == "variability"
    assert figure.layout.yaxis.title.text == "confidence"
    assert "showing 4 of 10 samples (random sample)" in figure.layout.title.text
    assert "showing" not in charts.data_map_figure(points, "aum").layout.title.text
    assert not figure.layout.shapes  # no cut-offs given: none drawn


def test_data_map_figure_draws_the_region_cutoffs():
    points = pd.DataFrame({
        "sample_id": [0, 1], "label": [1, 2], "original_label": [1, 2], "label_noisy": [False, False],
        "confidence": [0.9, 0.2], "variability": [0.05, 0.3], "color_value": [1.0, 0.0],
    })
    figure = charts.data_map_figure(points, "correctness", cutoffs=(0.34, 0.69))
    shapes = {shape.name: shape for shape in figure.layout.shapes}
    ambiguous, easy = shapes[charts_map.AMBIGUOUS_SHAPE], shapes[charts_map.EASY_SHAPE]
    assert (ambiguous.x0, ambiguous.x1, ambiguous.yref, ambiguous.y0, ambiguous.y1) == (0.34, 0.34, "paper", 0, 1)
    assert (easy.x0, easy.x1, easy.y0, easy.y1) == (0, 0.34, 0.69, 0.69)  # left of the ambiguous line only
    labels = {annotation.text: (annotation.x, annotation.y) for annotation in figure.layout.annotations}
    assert labels["<b>ambiguous</b>"][0] == 0.34
    assert labels["<b>easy-to-learn</b>"][1] > 0.69 > labels["<b>hard-to-learn</b>"][1]


def test_layer_grad_norm_figure_has_one_log_scaled_line_per_layer():
    layers = pd.DataFrame({"step": [0, 1, 2, 0, 1, 2], "layer": ["conv.1"] * 3 + ["head"] * 3,
                           "grad_norm": [0.1, 0.2, 0.3, 1.0, 2.0, 3.0]})
    figure = charts_map.layer_grad_norm_figure(layers.iloc[::-1], "showing 3 of 9 steps")
    assert [trace.name for trace in figure.data] == ["conv.1", "head"]
    assert list(figure.data[1].x) == [0, 1, 2] and list(figure.data[1].y) == [1.0, 2.0, 3.0]  # by step
    assert figure.layout.yaxis.type == "log"
    assert "showing 3 of 9 steps" in figure.layout.title.text


def test_step_figure_joins_sampled_gradient_norms_and_says_when_there_are_none():
    steps = pd.DataFrame({"step": range(6), "loss": [2.0, 1.8, 1.5, 1.4, 1.2, 1.1],
                          "grad_norm": [3.0, np.nan, np.nan, 2.0, np.nan, np.nan], "lr": [0.1] * 6})
    norms = charts.step_figure(steps, "grad_norm", "Gradient norm", log_y=True)
    assert list(norms.data[0].x) == [0, 3] and list(norms.data[0].y) == [3.0, 2.0]
    assert not norms.layout.annotations
    assert list(charts.step_figure(steps, "loss", "Loss").data[0].x) == list(range(6))
    none = charts.step_figure(steps.assign(grad_norm=np.nan), "grad_norm", "Gradient norm")
    assert len(none.data[0].x) == 0 and none.layout.annotations[0].text == "not recorded in this run"


def test_histogram_and_forgetting_figures():
    bins = pd.DataFrame({"bin_start": [0.0, 0.5], "bin_end": [0.5, 1.0], "samples": [10, 4],
                         "flipped": [1, 3]})
    figure = charts.histogram_figure(bins, "el2n", missing=2)
    assert len(figure.data) == 2 and figure.layout.barmode == "stack"
    assert list(figure.data[0].y) == [9, 1] and list(figure.data[1].y) == [1, 3]
    assert figure.layout.xaxis.title.text == "el2n" and "2 samples without a value" in figure.layout.title.text
    counts = pd.DataFrame({"forgetting_events": ["0", "1", "never learned"], "samples": [5, 3, 2],
                           "flipped": [0, 0, 2]})
    forgetting = charts.forgetting_figure(counts)
    assert list(forgetting.data[0].x) == ["0", "1", "never learned"]
    assert forgetting.layout.xaxis.type == "category"


def test_input_trajectory_and_compare_figures():
    line = charts.input_figure(np.arange(40, dtype=np.float32), "signal")
    assert line.data[0].type == "scatter" and len(line.data[0].y) == 40
    image = charts.input_figure(np.zeros((8, 8)), "image")
    assert image.data[0].type == "heatmap" and np.asarray(image.data[0].z).shape == (8, 8)
    trajectory = pd.DataFrame({"epoch": [0, 1, 2], "p_true": [0.1, 0.5, 0.9], "loss": [2.3, 0.7, 0.1],
                               "el2n": [1.2, 0.7, 0.1], "correct": [False, True, True]})
    figure = charts.trajectory_figure(trajectory)
    assert len(figure.data) == 4 and list(figure.data[3].y) == [0.0, 1.0, 1.0]
    curves = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "epoch": [0, 1, 0, 1],
                           "val_accuracy": [0.5, 0.6, 0.4, 0.7]})
    overlay = charts.compare_epochs_figure(curves, "val_accuracy", {"a": "run A", "b": "run B"})
    assert [trace.name for trace in overlay.data] == ["run A", "run B"]
    assert overlay.layout.yaxis.title.text == "validation accuracy"
    assert charts.sampling_note(20_000, 50_000) == "showing 20,000 of 50,000 samples (random sample)"




def test_agreement_figure_marks_flipped_labels():
    points = pd.DataFrame({"sample_id": [3, 4, 5], "label_noisy": [False, True, False],
                           "value_a": [0.1, 0.5, 0.9], "value_b": [0.2, 0.4, 0.8]})
    figure = charts.agreement_figure(points, "el2n", "run one", "run two", total=30)
    assert [trace.name for trace in figure.data] == ["given label", "flipped label"]
    assert list(figure.data[0].x) == [0.1, 0.9] and list(figure.data[1].customdata) == [4]
    assert figure.layout.xaxis.title.text == "el2n — run one"
    assert "showing 3 of 30 samples" in figure.layout.title.text


def test_weight_histogram_figure_bins_every_weight():
    # the Curriculum page's weight histogram (dashboard.charts_curriculum; one group without
    # flipped labels)
    from dashboard.charts_curriculum import WEIGHT_BINS, weight_distributions_figure

    weight = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 1.0])
    figure = weight_distributions_figure(weight, None)
    assert figure.data[0].type == "histogram" and list(figure.data[0].x) == weight.tolist()
    assert WEIGHT_BINS == 40 and figure.data[0].xbins.size == pytest.approx(1.0 / 40)
    assert figure.layout.title.text == "Weights (0 = pruned)"
    assert figure.layout.xaxis.title.text == "weight"


def test_weight_map_figure_draws_one_trace_per_group_with_its_full_size():
    points = pd.DataFrame({
        "sample_id": [1, 2, 3, 4], "confidence": [0.9, 0.8, 0.2, 0.1],
        "variability": [0.1, 0.2, 0.3, 0.05], "label_noisy": [False, False, True, True],
        "group": ["kept", "kept", "down-weighted", "pruned"],
    })
    figure = charts.weight_map_figure(points, {"kept": 900, "down-weighted": 1, "pruned": 1})
    assert [trace.type for trace in figure.data] == ["scattergl"] * 3
    assert [trace.name for trace in figure.data] == ["kept (900)", "down-weighted (1)", "pruned (1)"]
    assert list(figure.data[0].x) == [0.1, 0.2] and list(figure.data[0].y) == [0.9, 0.8]
    assert figure.data[2].marker.symbol == "x"
    assert figure.data[1].customdata.tolist() == [[3, 1]]  # sample_id, flipped
    assert figure.layout.title.text == "Data map: what the curriculum drops"
    assert figure.layout.yaxis.title.text == "confidence" and list(figure.layout.yaxis.range) == [-0.02, 1.02]
    only_kept = charts.weight_map_figure(points[points["group"] == "kept"], {"kept": 2})
    assert [trace.name for trace in only_kept.data] == ["kept (2)"]


def test_figures_of_runs_without_class_labels_or_p_label():
    points = pd.DataFrame({"sample_id": [1, 2], "label": pd.array([pd.NA, pd.NA], dtype="Int64"),
                           "original_label": pd.array([pd.NA, pd.NA], dtype="Int64"),
                           "label_noisy": [False, False], "confidence": [0.4, 0.8],
                           "variability": [0.1, 0.2], "color_value": [0.5, 1.0]})
    data_map = charts.data_map_figure(points, "correctness")
    assert "label %{customdata[1]}" not in data_map.data[0].hovertemplate
    assert [row[0] for row in data_map.data[0].customdata] == [1, 2]
    assert data_map.to_json()  # missing labels serialise
    loss_only = pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.0], "p_true": [np.nan, np.nan],
                              "el2n": [np.nan, np.nan], "correct": pd.array([pd.NA, pd.NA], dtype="boolean"),
                              "token_accuracy": [np.nan, np.nan]})
    figure = charts.trajectory_figure(loss_only)
    assert len(figure.data) == 1 and list(figure.data[0].y) == [2.0, 1.0]
    sequence = loss_only.assign(p_true=[0.3, 0.6], el2n=[0.9, 0.5], token_accuracy=[0.25, 0.75],
                                correct=[False, True])
    panels = [annotation.text for annotation in charts.trajectory_figure(sequence).layout.annotations]
    assert panels == ["p(given label)", "loss", "EL2N", "token accuracy", "correct"]
    weights = charts.weight_loss_figure(np.array([0.1, 0.2, 3.0, 4.0, np.nan]), np.array([1, 1, 0, 0.5, 1]))
    assert [trace.name for trace in weights.data] == ["kept (2)", "down-weighted (1)", "pruned (1)"]
    assert list(weights.data[2].x) == [3.0]


def test_weight_bins_are_centred_on_the_values_of_a_hard_curriculum():
    """Plotly.js drew every sample in the first bin when the bin edges sat on the weights
    themselves (0 and 1), so each weight must fall in the middle of its bin."""
    from dashboard.charts_curriculum import WEIGHT_BINS, weight_distributions_figure

    weight = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    figure = weight_distributions_figure(weight, np.array([True, False, False, False, False]))
    for trace in figure.data:
        start, size = trace.xbins.start, trace.xbins.size
        assert size == pytest.approx(1.0 / WEIGHT_BINS)
        offsets = (weight - start) / size  # position inside the bins, in bins
        np.testing.assert_allclose(offsets % 1.0, 0.5)
        assert trace.xbins.end > weight.max()
