"""dashboard.formatting: how values and run tables are written, on hand-made values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard import formatting


def test_status_label_shows_live_progress():
    assert formatting.status_label("running", 3, 20) == "running · epoch 3/20"
    assert formatting.status_label("running", np.nan, None) == "running · epoch 0/?"
    assert formatting.status_label("finished", 20, 20) == "finished"
    assert formatting.status_label(None, None, None) == "unknown"


def test_percent_and_number():
    assert formatting.percent(0.8431) == "84.3 %" and formatting.percent(0.2, 0) == "20 %"
    assert formatting.percent(None) == "–" and formatting.percent(np.nan) == "–"
    assert formatting.number(12345) == "12,345" and formatting.number(2.0) == "2"
    assert formatting.number(0.123456) == "0.123" and formatting.number(0.5, 1) == "0.5"
    assert formatting.number(True) == "yes" and formatting.number(np.bool_(False)) == "no"
    assert formatting.number(None) == "–" and formatting.number(float("nan")) == "–"


def test_runs_overview_is_newest_first_with_parents_by_name():
    runs = pd.DataFrame({
        "run_id": ["r1", "r2"], "name": ["parent", "child"], "status": ["finished", "running"],
        "epochs_done": [20, 3], "max_epochs": [20, 10], "task": ["mnist1d"] * 2, "model": ["cnn"] * 2,
        "seed": [0, 0], "label_noise": [0.2, 0.2], "best_val_accuracy": [0.84, 0.5],
        "parent_run_id": [None, "r1"], "curriculum": [None, "/somewhere/curricula/c.parquet"],
        "created_at": ["2025-01-01", "2025-01-02"],
    })
    shown = formatting.runs_overview(runs)
    assert shown["name"].tolist() == ["child", "parent"]
    assert shown["status"].tolist() == ["running · epoch 3/10", "finished"]
    assert shown["parent run"].iloc[0] == "parent" and pd.isna(shown["parent run"].iloc[1])
    assert shown["curriculum"].iloc[0] == "c.parquet" and pd.isna(shown["curriculum"].iloc[1])
    assert shown.columns[-1] == "run_id"
    assert formatting.runs_overview(runs.iloc[:0]).empty


def test_compare_table():
    infos = {
        "r1": {"status": "finished", "task": "mnist1d", "model": "cnn", "seed": 0,
               "config": {"label_noise": 0.2}, "best_val_accuracy": 0.8, "final_val_accuracy": 0.79,
               "final_val_loss": 0.6, "epochs_done": 20},
        "r2": {"status": "running", "epochs_done": 2, "max_epochs": 5, "parent_run_id": "r1"},
    }
    table = formatting.compare_table(infos, {"r1": "parent", "r2": "child"}, {"r1": "parent"})
    assert table["run"].tolist() == ["parent", "child"]
    assert table["status"].tolist() == ["finished", "running · epoch 2/5"]
    assert table["label noise"].tolist() == [0.2, 0.0]
    assert pd.isna(table["parent run"].iloc[0]) and table["parent run"].iloc[1] == "parent"


# -- a rerun's verdict -------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A metric spec as store.views.verdict.Metric has it (formatting takes any such object)."""

    name: str
    label: str
    unit: str
    higher_is_better: bool | None


ACCURACY = Spec("best_val_accuracy", "Best validation accuracy", "accuracy", True)
LOSS = Spec("last_val_loss", "Last validation loss", "loss", False)
STEPS = Spec("steps", "Optimisation steps", "count", None)
WALL = Spec("wall_seconds", "Wall time", "seconds", None)


def test_metric_values_and_changes_keep_one_unit_per_metric():
    assert formatting.metric_value(0.8431, "accuracy") == "84.3 %"
    assert formatting.metric_change(0.059, "accuracy") == "+5.9 pp"
    assert formatting.metric_change(-0.0123, "accuracy") == "-1.2 pp"
    assert formatting.metric_change(0.0134, "accuracy", signed=False) == "1.3 pp"
    assert formatting.metric_value(0.77774, "loss") == "0.778" and formatting.metric_change(-0.3465, "loss") == "-0.346"
    assert formatting.metric_value(1260, "count") == "1,260" and formatting.metric_change(-260, "count") == "-260"
    assert formatting.metric_value(7.0, "seconds") == "7 s" and formatting.metric_change(1.0, "seconds") == "+1 s"
    assert formatting.metric_value(None, "loss") == "–" and formatting.metric_change(np.nan, "accuracy") == "–"


def verdict_row(metric: str, parent, rerun, seeds: int, seed_values: list[float], exceeds) -> dict:
    values = pd.Series(seed_values, dtype=float)
    threshold = (abs(values.iloc[0] - values.iloc[1]) if seeds == 2 else 2 * values.std()) if seeds >= 2 else np.nan
    return {"metric": metric, "parent": parent, "rerun": rerun, "difference": rerun - parent, "seeds": seeds,
            "seed_mean": values.mean() if seeds else np.nan, "seed_std": values.std() if seeds > 1 else np.nan,
            "seed_min": values.min() if seeds else np.nan, "seed_max": values.max() if seeds else np.nan,
            "threshold": threshold, "exceeds_noise": exceeds}


def test_verdict_frame_names_metrics_and_shows_seed_columns_only_with_seeds():
    table = pd.DataFrame([verdict_row("best_val_accuracy", 0.843, 0.902, 2, [0.843, 0.862], True),
                          verdict_row("last_val_loss", 0.7777, 0.4313, 2, [0.7777, 0.7630], True),
                          verdict_row("steps", 1260, 1000, 2, [1260, 1260], None)])
    shown = formatting.verdict_frame(table, [ACCURACY, LOSS, STEPS])
    assert shown.columns.tolist() == ["metric", "parent", "rerun", "difference", "seeds mean", "seeds std",
                                      "seeds min", "seeds max", "beyond seed noise"]
    assert shown.iloc[0].tolist() == ["Best validation accuracy", "84.3 %", "90.2 %", "+5.9 pp", "85.2 %",
                                      "1.3 pp", "84.3 %", "86.2 %", "yes"]
    assert shown.iloc[1, :4].tolist() == ["Last validation loss", "0.778", "0.431", "-0.346"]
    assert shown.iloc[2].tolist()[-1] == "–" and shown.iloc[2, 3] == "-260"
    alone = formatting.verdict_frame(pd.DataFrame([verdict_row("best_val_accuracy", 0.8, 0.9, 1, [0.8], None)]),
                                     [ACCURACY])
    assert alone.columns.tolist() == ["metric", "parent", "rerun", "difference"]


def test_class_verdict_frame():
    table = pd.DataFrame({"label": [0, 1], "parent": [0.5, 0.8], "rerun": [0.75, 0.7], "difference": [0.25, -0.1],
                          "seeds": [2, 2], "seed_std": [0.01, 0.02], "seed_min": [0.5, 0.8], "seed_max": [0.52, 0.83],
                          "threshold": [0.02, 0.03], "exceeds_noise": [True, True]})
    shown = formatting.class_verdict_frame(table)
    assert shown["class"].tolist() == ["0", "1"] and shown["difference"].tolist() == ["+25.0 pp", "-10.0 pp"]
    assert shown["parent"].tolist() == ["50.0 %", "80.0 %"] and shown["seeds std"].tolist() == ["1.0 pp", "2.0 pp"]
    assert formatting.class_verdict_frame(table.assign(seeds=[1, 1])).columns.tolist() == \
        ["class", "parent", "rerun", "difference"]


def test_verdict_sentence_states_the_difference_the_spread_and_the_rule():
    two = verdict_row("best_val_accuracy", 0.843, 0.860, 2, [0.843, 0.862], False)
    assert formatting.verdict_sentence(two, ACCURACY, 2.0) == (
        "The rerun is 1.7 points better than its parent on best validation accuracy (84.3 % → 86.0 %); "
        "the parent's 2 seeds differ by 1.9 points: not distinguishable from seed noise "
        "(rule: |difference| > the seeds' range).")
    beyond = verdict_row("best_val_accuracy", 0.843, 0.902, 2, [0.843, 0.862], True)
    assert formatting.verdict_sentence(beyond, ACCURACY, 2.0).endswith(
        "the parent's 2 seeds differ by 1.9 points: the difference exceeds seed noise "
        "(rule: |difference| > the seeds' range).")
    three = verdict_row("best_val_accuracy", 0.85, 0.83, 3, [0.85, 0.86, 0.87], True)
    assert formatting.verdict_sentence(three, ACCURACY, 2.0) == (
        "The rerun is 2.0 points worse than its parent on best validation accuracy (85.0 % → 83.0 %); "
        "the parent's 3 seeds have a standard deviation of 1.0 points: the difference exceeds seed noise "
        "(rule: |difference| > 2 × std = 2.0 points).")
    loss = verdict_row("last_val_loss", 0.778, 0.431, 2, [0.778, 0.763], True)
    assert formatting.verdict_sentence(loss, LOSS, 2.0).startswith(
        "The rerun is 0.347 better than its parent on last validation loss (0.778 → 0.431); "
        "the parent's 2 seeds differ by 0.015: the difference exceeds")
    alone = verdict_row("best_val_accuracy", 0.8, 0.8, 1, [0.8], None)
    assert formatting.verdict_sentence(alone, ACCURACY, 2.0) == (
        "The rerun equals its parent on best validation accuracy (80.0 %); the parent has no sibling seeds in "
        "the store (finished runs with its settings and another seed), so the difference cannot be set against "
        "seed noise.")
    assert formatting.verdict_sentence(verdict_row("steps", 1260, 1000, 2, [1260, 1260], None), STEPS, 2.0) == \
        "The rerun is 260 lower than its parent on optimisation steps (1,260 → 1,000)."
    missing = verdict_row("best_val_accuracy", 0.8, 0.9, 2, [0.8, 0.81], None) | {"difference": np.nan}
    assert formatting.verdict_sentence(missing, ACCURACY, 2.0).endswith("was not recorded: no verdict.")


def test_paired_sentence():
    row = {"metric": "best_val_accuracy", "pairs": 3, "parent_mean": 0.85, "rerun_mean": 0.9,
           "mean_difference": 0.05, "std_error": 0.01, "threshold": 0.02, "exceeds_noise": True}
    assert formatting.paired_sentence(row, ACCURACY, 2.0) == (
        "Over 3 seeds, the reruns of this curriculum average 90.0 % on best validation accuracy against their "
        "parents' 85.0 %: 5.0 points better (paired, standard error 1.0 points): the difference exceeds seed "
        "noise (rule: |mean difference| > 2 × standard error = 2.0 points).")
    assert formatting.paired_sentence(row | {"pairs": 1, "mean_difference": np.nan}, ACCURACY, 2.0) == ""
    shown = formatting.paired_frame(pd.DataFrame([row]), [ACCURACY])
    assert shown.iloc[0].tolist() == ["Best validation accuracy", 3, "85.0 %", "90.0 %", "+5.0 pp", "1.0 pp", "yes"]


def test_what_correct_means_per_output_kind():
    assert formatting.correct_definition("sequence", 0.5) == \
        "A sequence counts as correct when its token accuracy ≥ 0.5."
    assert formatting.correct_definition("sequence", 1.0).endswith("token accuracy ≥ 1.")
    assert "not written in this run's run.json" in formatting.correct_definition("sequence", None)
    assert "not defined" in formatting.correct_definition("loss")
    assert formatting.correct_definition("classification") == \
        "A sample counts as correct when its highest logit is the one of its given label."


def test_messages_for_runs_without_p_label():
    sentence = formatting.data_map_unavailable("loss")
    assert sentence.startswith("The data map is not available for this run: ")
    assert "per_sample_loss" in sentence and sentence.count(".") == 1  # one sentence
    assert formatting.data_map_unavailable("classification") == "No sample has been presented yet."
    assert formatting.unrecorded_scores_note("classification", ["aum"]) == ""
    assert formatting.unrecorded_scores_note("loss", []) == ""
    assert formatting.unrecorded_scores_note("loss", ["aum", "forgetting_events"]).startswith(
        "Not available for this run (aum, forgetting events): ")
    assert formatting.kind_label("loss") == "per-sample loss only"
