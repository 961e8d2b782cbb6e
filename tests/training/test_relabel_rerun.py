"""A relabel rerun trains on the curriculum's labels: its presentations record them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import Store, run_summary
from store.curriculum import CurriculumError, build_curriculum, save_curriculum
from store.curriculum.relabel import with_suggestions
from store.queries import run_connection
from store.views.relabel import suggested_labels


def _train(store_path: Path, **overrides) -> str:
    from training.run import TrainConfig, train

    config = dict(task="mnist1d", model="mlp", epochs=1, seed=0, label_noise=0.2, store=str(store_path),
                  progress=False, grand="off")
    config.update(overrides)
    return train(TrainConfig(**config))


def presented_labels(store: Store, run_id: str) -> pd.DataFrame:
    con = run_connection(store, run_id, ("presentations",))
    try:
        return con.execute("SELECT sample_id, any_value(label) AS label, count(DISTINCT label) AS labels "
                           "FROM presentations GROUP BY sample_id ORDER BY sample_id").df()
    finally:
        con.close()


@pytest.mark.slow
def test_a_relabel_rerun_presents_the_replaced_labels(tmp_path):
    store_path = tmp_path / "store"
    parent = _train(store_path)
    store = Store(store_path)
    summary = with_suggestions(run_summary(store, parent), suggested_labels(store, parent, (0, 0)))
    curriculum = build_curriculum(summary, "relabel", "loss", fraction=0.3, task="mnist1d", source_runs=[parent])
    table = curriculum.table.set_index("sample_id")
    replaced = table.index[table["label"].to_numpy() != summary.set_index("sample_id").loc[table.index, "label"]]
    assert len(replaced) > 50  # one epoch of an mlp disagrees with many of the hardest 30 %
    path = save_curriculum(curriculum, tmp_path / "relabel.parquet")
    rerun = _train(store_path, curriculum=str(path))
    assert store.run_info(rerun)["parent_run_id"] == parent
    presented = presented_labels(store, rerun).set_index("sample_id")
    assert len(presented) == len(table) and (presented["labels"] == 1).all()
    # every presentation carries the curriculum's label: replaced ones too
    np.testing.assert_array_equal(presented.loc[table.index, "label"].to_numpy(), table["label"].to_numpy())
    parent_labels = presented_labels(store, parent).set_index("sample_id")["label"]
    assert (presented.loc[replaced, "label"] != parent_labels.loc[replaced]).all()


def test_a_label_out_of_range_refuses_the_rerun_before_anything_is_written(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sample_id,weight,label\n0,1,10\n1,1,3\n")
    with pytest.raises(CurriculumError, match=r"label 10 of sample_id 0 is not a class of the task; expected an "
                                              r"integer in \[0, 10\)"):
        _train(tmp_path / "store", curriculum=str(path))
    assert not (tmp_path / "store").exists()
