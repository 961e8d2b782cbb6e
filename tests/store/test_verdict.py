"""store.views.verdict: sibling seeds, a run's metrics, the seed spread and the noise rule at
its edges, checked against pandas on hand-made values and on a tmp copy of ``sample_runs/``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from store.curriculum import class_accuracy
from store.views import verdict

from conftest import sample_run_ids

RUNS = sample_run_ids()


def info(run_id: str, seed: int = 0, created: str = "2026-01-01T00:00:00+00:00", status: str = "finished",
         parent: str | None = None, **config) -> dict:
    """A run.json of an mnist1d cnn run; ``config`` overrides its settings."""
    settings = {"task": "mnist1d", "model": "cnn", "epochs": 20, "seed": seed, "label_noise": 0.2,
                "label_noise_seed": 0, "lr": None, "batch_size": None, "weight_decay": 0.01,
                "keep_steps": False, "curriculum": None, "grand": "on", "name": run_id} | config
    return {"run_id": run_id, "name": run_id, "status": status, "task": settings["task"], "model": settings["model"],
            "seed": seed, "max_epochs": settings["epochs"], "world_size": 1, "created_at": created,
            "parent_run_id": parent, "config": settings}


def metrics(**values) -> dict[str, float | None]:
    return {metric.name: values.get(metric.name) for metric in verdict.METRICS}


# -- sibling seeds ---------------------------------------------------------------------


def test_siblings_share_every_setting_but_the_seed():
    parent = info("p", seed=0)
    others = [
        parent,
        info("s1", seed=1, grand=None, name="other name"),  # recording and name may differ
        info("s1-later", seed=1, created="2026-02-01T00:00:00+00:00"),  # seed 1 again: the first created counts
        info("s2", seed=2, created="2026-01-02T00:00:00+00:00"),
        info("same-seed", seed=0),
        info("other-lr", seed=3, lr=0.01),
        info("other-noise-seed", seed=4, label_noise_seed=1),
        info("other-noise", seed=5, label_noise=0.0),
        info("other-epochs", seed=6, epochs=10),
        info("on-a-curriculum", seed=7, curriculum="curricula/c.parquet"),
        info("running", seed=8, status="running"),
        info("failed", seed=9, status="failed"),
        info("other-model", seed=10, model="mlp"),
        {"run_id": "no-config", "status": "finished", "task": "mnist1d", "model": "cnn", "seed": 11},
    ]
    assert [s["run_id"] for s in verdict.sibling_seeds(parent, others)] == ["s1", "s2"]
    assert verdict.sibling_seeds({"run_id": "x", "seed": 0, "config": None}, others) == []
    # seeds order numerically (10 after 2)
    many = [info(f"r{seed}", seed=seed) for seed in (10, 2, 1)]
    assert [s["seed"] for s in verdict.sibling_seeds(parent, many)] == [1, 2, 10]


def test_siblings_of_the_sample_runs(sample_store):
    infos = [sample_store.run_info(run_id) for run_id in RUNS.values()]
    by_name = {i["name"]: i for i in infos}
    names = lambda found: [i["name"] for i in found]  # noqa: E731
    assert names(verdict.sibling_seeds(by_name["cnn-noise20-s0"], infos)) == ["cnn-noise20-s1"]
    assert names(verdict.sibling_seeds(by_name["cnn-clean-s1"], infos)) == ["cnn-clean-s0"]
    # the rerun trained on a curriculum: the plain seed-1 run is not its sibling
    assert verdict.sibling_seeds(by_name["cnn-noise20-s0-clean"], infos) == []


def test_seed_reruns_match_curriculum_and_settings_and_take_the_newest():
    rerun = info("r0", seed=0, parent="p0", curriculum="/a/curricula/c.parquet")
    infos = [
        rerun,
        info("r1-old", seed=1, parent="p1", curriculum="/b/curricula/c.parquet"),  # same file name elsewhere
        info("r1-new", seed=1, parent="p1", curriculum="curricula/c.parquet", created="2026-03-01T00:00:00+00:00"),
        info("r2-other-curriculum", seed=2, parent="p2", curriculum="curricula/d.parquet"),
        info("r2-other-epochs", seed=2, parent="p2", curriculum="curricula/c.parquet", epochs=5),
        info("r3-running", seed=3, parent="p3", curriculum="curricula/c.parquet", status="running"),
        info("r4-not-a-seed", seed=4, parent="p4", curriculum="curricula/c.parquet"),
    ]
    found = verdict.seed_reruns(rerun, ["p0", "p1", "p2", "p3"], infos)
    assert {parent: i["run_id"] for parent, i in found.items()} == {"p0": "r0", "p1": "r1-new"}


# -- a run's metrics -------------------------------------------------------------------


def test_run_metrics_of_a_sample_run_against_its_files(sample_store):
    run_id = RUNS["cnn-noise20-s0-clean"]
    run_info = sample_store.run_info(run_id)
    totals = verdict.training_totals(sample_store, run_id)
    steps = pd.read_parquet(sample_store.run_dir(run_id) / "steps.parquet")
    epochs = pd.read_parquet(sample_store.run_dir(run_id) / "epochs.parquet")
    assert totals.steps == len(steps) == steps["step"].nunique()
    assert totals.samples_presented == int(epochs.loc[epochs["split"] == "train", "num_samples"].sum())
    values = verdict.run_metrics(run_info, totals)
    assert values["best_val_accuracy"] == run_info["best_val_accuracy"]
    assert values["last_val_loss"] == run_info["final_val_loss"]
    assert values["epochs"] == 20
    expected_seconds = (pd.Timestamp(run_info["finished_at"]) - pd.Timestamp(run_info["created_at"])).total_seconds()
    assert values["wall_seconds"] == expected_seconds
    # the parent presented every sample each epoch; the rerun only the 3,200 it kept
    parent_totals = verdict.training_totals(sample_store, RUNS["cnn-noise20-s0"])
    assert parent_totals.samples_presented == 4000 * 20 and totals.samples_presented == 3200 * 20


def test_run_metrics_leave_unrecorded_values_empty():
    values = verdict.run_metrics({"best_val_accuracy": float("nan"), "created_at": "2026-01-01T00:00:00+00:00",
                                  "finished_at": None}, verdict.TrainingTotals(steps=None, samples_presented=12))
    assert values["best_val_accuracy"] is None and values["wall_seconds"] is None and values["steps"] is None
    assert values["samples_presented"] == 12.0 and set(values) == {m.name for m in verdict.METRICS}


# -- the spread and the rule -----------------------------------------------------------


def test_noise_threshold_is_the_range_of_two_seeds_and_two_std_of_more():
    assert verdict.noise_threshold([]) is None and verdict.noise_threshold([0.5]) is None
    assert verdict.noise_threshold([0.5, None, float("nan")]) is None
    assert verdict.noise_threshold([0.75, 0.5]) == 0.25
    values = [0.5, 0.75, 1.0, 0.6]
    assert verdict.noise_threshold(values) == pytest.approx(2 * pd.Series(values).std())
    assert verdict.noise_threshold([0.5, 0.75, 1.0]) == 0.5  # std 0.25, exactly


@pytest.mark.parametrize(("seeds", "parent", "rerun", "beyond"), [
    ([0.5, 0.75], 0.5, 0.75, False),      # 2 seeds: |diff| equal to their range is not beyond it
    ([0.5, 0.75], 0.5, 0.8, True),        # ... just outside it is
    ([0.5, 0.75], 0.75, 0.45, True),      # either direction
    ([0.5, 0.75, 1.0], 0.25, 0.75, False),  # 3 seeds: |diff| = 2 x std (0.5) is not beyond
    ([0.5, 0.75, 1.0], 0.25, 0.8, True),
    ([0.5], 0.5, 0.9, None),              # one seed: no verdict
])
def test_the_rule_at_its_edges(seeds, parent, rerun, beyond):
    table = verdict.verdict_table(metrics(best_val_accuracy=parent), metrics(best_val_accuracy=rerun),
                                  [metrics(best_val_accuracy=value) for value in seeds]).set_index("metric")
    row = table.loc["best_val_accuracy"]
    assert row["difference"] == pytest.approx(rerun - parent)
    assert row["exceeds_noise"] is beyond


def test_verdict_table_spread_matches_pandas():
    rng = np.random.default_rng(0)
    seeds = [metrics(best_val_accuracy=a, last_val_loss=b, steps=100) for a, b in rng.uniform(0, 1, (4, 2))]
    seeds[2]["last_val_loss"] = None  # a seed that did not record it
    parent, rerun = seeds[0], metrics(best_val_accuracy=0.99, last_val_loss=0.1, steps=80)
    table = verdict.verdict_table(parent, rerun, seeds).set_index("metric")
    assert list(table.index) == [m.name for m in verdict.METRICS]
    frame = pd.DataFrame(seeds)
    for name in ("best_val_accuracy", "last_val_loss"):
        reference = frame[name].dropna().astype(float)
        row = table.loc[name]
        assert row["seeds"] == len(reference)
        assert row["seed_mean"] == pytest.approx(reference.mean()) and row["seed_std"] == pytest.approx(reference.std())
        assert row["seed_min"] == reference.min() and row["seed_max"] == reference.max()
        assert row["threshold"] == pytest.approx(2 * reference.std())
        assert row["difference"] == pytest.approx(rerun[name] - parent[name])
    # counts follow from the settings: no verdict on them
    assert table.loc["steps", "difference"] == -20 and table.loc["steps", "exceeds_noise"] is None
    assert math.isnan(table.loc["epochs", "difference"]) and table.loc["epochs", "seeds"] == 0


def test_paired_table_matches_pandas_and_its_rule():
    parents = [0.5, 0.75, 0.625]
    reruns = [0.75, 0.875, 0.875]
    pairs = [(metrics(best_val_accuracy=p), metrics(best_val_accuracy=r)) for p, r in zip(parents, reruns)]
    row = verdict.paired_table(pairs).set_index("metric").loc["best_val_accuracy"]
    differences = pd.Series(reruns) - pd.Series(parents)
    assert row["pairs"] == 3 and row["parent_mean"] == pytest.approx(np.mean(parents))
    assert row["mean_difference"] == pytest.approx(differences.mean())
    assert row["std_error"] == pytest.approx(differences.std() / math.sqrt(3))
    assert row["exceeds_noise"] is bool(abs(differences.mean()) > 2 * differences.std() / math.sqrt(3))
    # two pairs: 2 x the standard error is the differences' range; a mean beyond it or not
    def two_pairs(first: float, second: float) -> pd.Series:
        table = verdict.paired_table([(metrics(best_val_accuracy=0.0), metrics(best_val_accuracy=first)),
                                      (metrics(best_val_accuracy=0.0), metrics(best_val_accuracy=second))])
        return table.set_index("metric").loc["best_val_accuracy"]

    assert two_pairs(0.25, 0.0)["threshold"] == pytest.approx(0.25) and two_pairs(0.25, 0.0)["exceeds_noise"] is False
    assert two_pairs(0.7, 0.3)["threshold"] == pytest.approx(0.4) and two_pairs(0.7, 0.3)["exceeds_noise"] is True
    assert two_pairs(-0.7, -0.3)["exceeds_noise"] is True
    single = verdict.paired_table(pairs[:1]).set_index("metric").loc["best_val_accuracy"]
    assert single["pairs"] == 1 and single["exceeds_noise"] is None and math.isnan(single["mean_difference"])


def test_class_verdict_table_against_pandas(sample_store):
    parent_id, sibling_id, rerun_id = RUNS["cnn-noise20-s0"], RUNS["cnn-noise20-s1"], RUNS["cnn-noise20-s0-clean"]
    frames = {run_id: class_accuracy(sample_store, run_id) for run_id in (parent_id, sibling_id, rerun_id)}
    table = verdict.class_verdict_table(frames[parent_id], frames[rerun_id], [frames[parent_id], frames[sibling_id]])
    # reference: the val_classes files summed per class at the last epoch, in pandas
    last = {}
    for run_id in frames:
        rows = pd.read_parquet(sample_store.run_dir(run_id) / "val_classes.parquet")
        rows = rows[rows["epoch"] == rows["epoch"].max()].groupby("label")[["correct_sum", "num_samples"]].sum()
        last[run_id] = rows["correct_sum"] / rows["num_samples"]
    assert table["label"].tolist() == list(range(10))
    np.testing.assert_allclose(table["parent"], last[parent_id].to_numpy())
    np.testing.assert_allclose(table["difference"], (last[rerun_id] - last[parent_id]).to_numpy())
    spread = pd.concat([last[parent_id], last[sibling_id]], axis=1)
    np.testing.assert_allclose(table["seed_std"], spread.std(axis=1).to_numpy())
    np.testing.assert_allclose(table["threshold"], (spread.max(axis=1) - spread.min(axis=1)).to_numpy())
    expected = (last[rerun_id] - last[parent_id]).abs() > (spread.max(axis=1) - spread.min(axis=1))
    assert table["exceeds_noise"].tolist() == expected.tolist()
    empty = frames[parent_id].iloc[:0]
    assert verdict.class_verdict_table(empty, empty, []) is None
