"""dashboard.formatting: how values and run tables are written, on hand-made values."""

from __future__ import annotations

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


def test_compare_and_outcome_tables():
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
    outcome = formatting.outcome_table(infos, {"r1": "parent · p", "r2": "rerun · c"})
    assert outcome.columns.tolist() == ["run", "best val acc", "final val acc", "final val loss", "epochs"]
    assert outcome.iloc[0].tolist() == ["parent · p", 0.8, 0.79, 0.6, 20]


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
