"""Runs the plan: each experiment without a record is executed and its record written.

Training experiments are ordinary ``trainmap train`` runs (``training.run.train`` in this
process, the settings of ``trainmap train``), so the dashboard shows them. An experiment that
needs other runs (a curriculum built from their scores, an analysis) needs them *in the store*:
a record whose run is not in this store (records committed from another machine) is redone
first. A failing experiment is reported and left without a record (the next invocation tries
again); Ctrl-C stops at once, and every finished experiment keeps its record.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.evidence.plan import EvidenceConfig, Experiment
from training.evidence.records import Records

ONLINE = ("infobatch", "loss-reweight", "self-paced")


class Runner:
    def __init__(self, store_path: Path, records: Records, experiments: list[Experiment], config: EvidenceConfig,
                 progress: bool = True) -> None:
        self.store_path = Path(store_path)
        self.records = records
        self.by_key = {e.key: e for e in experiments}
        self.config = config
        self.progress = progress
        self.failed: list[tuple[str, str]] = []
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from store import Store

            self._store = Store(self.store_path, create=True)
        return self._store

    # -- driving ----------------------------------------------------------------------

    def pending(self, plan: list[Experiment]) -> list[Experiment]:
        return [e for e in plan if self.records.get(e.key) is None]

    def run(self, plan: list[Experiment], after_each: Callable[[], None] | None = None) -> int:
        """Execute every experiment of ``plan`` without a record; the number executed.
        ``after_each`` is called after every experiment (the command rewrites the report now
        and then, so a long regeneration shows its progress)."""
        from tqdm import tqdm

        todo = self.pending(plan)
        done = 0
        bar = tqdm(total=len(todo), unit="exp", desc="evidence", disable=not self.progress, file=sys.stderr,
                   dynamic_ncols=True)
        try:
            for experiment in todo:
                bar.set_postfix_str(experiment.name[-60:], refresh=True)
                if self.records.get(experiment.key) is None and self.ensure(experiment) is not None:
                    done += 1
                bar.update(1)
                if after_each is not None:
                    after_each()
        finally:
            bar.close()
        return done

    def ensure(self, experiment: Experiment, need_run: bool = False) -> dict[str, Any] | None:
        """The result of ``experiment``, executed if it has no record (or, with ``need_run``,
        if its run is not in this store); ``None`` when it or what it needs failed."""
        result = self.records.result(experiment.key)
        if result is not None and not (need_run and not self.has_run(result)):
            return result
        for dep in experiment.deps:
            if self.ensure(self.by_key[dep], need_run=True) is None:
                self.failed.append((experiment.name, f"needs {self.by_key[dep].name}, which failed"))
                return None
        try:
            result = self.execute(experiment)
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one experiment's failure does not stop the others
            self.failed.append((experiment.name, f"{type(error).__name__}: {error}"))
            print(f"trainmap evidence: {experiment.name} failed: {type(error).__name__}: {error}", file=sys.stderr)
            traceback.print_exc(limit=3, file=sys.stderr)
            return None
        self.records.write(experiment, result)
        return result

    def has_run(self, result: dict[str, Any]) -> bool:
        run_id = result.get("run_id")
        if run_id is None:
            return True  # cv, plain, analysis: nothing in the store
        from store.errors import RunNotFoundError

        try:  # a record committed from another machine names a run this store lacks
            return self.store.run_info(run_id).get("status") == "finished"
        except RunNotFoundError:
            return False

    def run_id(self, key: str) -> str:
        result = self.records.result(key)
        assert result is not None and "run_id" in result, key
        return result["run_id"]

    # -- experiments ----------------------------------------------------------------------

    def execute(self, experiment: Experiment) -> dict[str, Any]:
        handler = {"train": self.train, "cv": self.cv, "plain": self.plain, "analysis": self.analysis}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        result = handler[experiment.kind](experiment)
        # how busy the machine was (1-minute load average at the start): timings taken while
        # other jobs ran are slower, in wall and in CPU time
        result["load_average"] = load
        return result

    def train(self, experiment: Experiment) -> dict[str, Any]:
        from store import sample_summary
        from training.config import TrainConfig
        from training.evidence.metrics import noise_detection
        from training.evidence.plain import quiet
        from training.run import train

        s = experiment.settings
        curriculum, facts = (None, None)
        if s.get("curriculum"):
            curriculum, facts = self.build_curriculum(experiment)
        config = TrainConfig(task=s["task"], model=s["model"], epochs=s["epochs"], seed=s["seed"],
                             label_noise=s["label_noise"], store=str(self.store_path), name=experiment.name,
                             curriculum=curriculum, keep_steps=bool(s.get("keep_steps")), grand=s.get("grand"),
                             progress=False)
        quiet()
        warm_up(s["task"])
        started, cpu = time.perf_counter(), cpu_seconds()
        run_id = train(config)
        wall = time.perf_counter() - started
        result = run_result(self.store, run_id, wall)
        result["cpu_seconds"] = cpu_seconds() - cpu
        if facts:
            result["curriculum"] = facts
        if s["label_noise"] > 0 and curriculum is None:
            result["noise"] = noise_detection(sample_summary(self.store, run_id))
        return result

    def build_curriculum(self, experiment: Experiment) -> tuple[str, dict[str, Any]]:
        """The experiment's curriculum, built from its source runs' scores (averaged over them)
        and saved into the store's ``curricula/``; its path and what it kept."""
        import numpy as np

        from store import sample_summary
        from store.curriculum import build_curriculum
        from store.curriculum.format import save_to_store
        from training.evidence.metrics import init_grand

        s = experiment.settings
        spec = s["curriculum"]
        runs = [self.run_id(key) for key in spec["sources"]]
        epochs = {"early": (0, int(spec.get("early_epochs", 1)) - 1)}.get(spec["epochs"])
        summary = sample_summary(self.store, runs, epochs)
        if spec["epochs"] == "init":
            init = init_grand(self.store, runs).set_index("sample_id")["grand"]
            summary["grand"] = summary["sample_id"].map(init).to_numpy()
        if spec["strategy"] == "relabel":
            from store.curriculum.relabel import with_suggestions
            from store.views.relabel import default_relabel_epochs, suggested_labels

            window = default_relabel_epochs(self.store, runs[0]) or (0, 0)
            summary = with_suggestions(summary, suggested_labels(self.store, runs[0], window))
        curriculum = build_curriculum(summary, spec["strategy"], spec["score"], seed=s["seed"], task=s["task"],
                                      source_runs=runs, name=experiment.name, **spec["params"])
        path = save_to_store(curriculum, self.store.root)
        weights = curriculum.weights_for(summary["sample_id"].to_numpy())
        facts: dict[str, Any] = {"kept": int((weights > 0).sum()), "samples": len(weights)}
        flipped = (summary["label_noisy"].fillna(False).to_numpy(bool) if "label_noisy" in summary
                   else np.zeros(len(summary), dtype=bool))
        if flipped.any():
            facts.update(flipped=int(flipped.sum()), flipped_removed=int((weights[flipped] == 0).sum()),
                         flipped_below_half=int((weights[flipped] < 0.5).sum()),
                         clean_removed=int((weights[~flipped] == 0).sum()),
                         clean_below_half=int((weights[~flipped] < 0.5).sum()))
            if "label" in curriculum.table:
                table = curriculum.table.set_index("sample_id")["label"].reindex(summary["sample_id"]).to_numpy()
                facts["flipped_relabelled_clean"] = int(
                    (flipped & (table == summary["original_label"].to_numpy())).sum())
        facts["mean_weight"] = float(np.mean(weights))
        return str(path), facts

    def cv(self, experiment: Experiment) -> dict[str, Any]:
        from training.evidence.plain import cleanlab_scores

        s = experiment.settings
        started, cpu = time.perf_counter(), cpu_seconds()
        result = cleanlab_scores(s["task"], s["model"], s["epochs"], s["seed"], s["label_noise"], s["folds"])
        result["wall_seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = cpu_seconds() - cpu
        return result

    def plain(self, experiment: Experiment) -> dict[str, Any]:
        import numpy as np

        from training.evidence.plain import fit_predict
        from training.tasks import load_task

        s = experiment.settings
        data = load_task(s["task"])
        started, cpu = time.perf_counter(), cpu_seconds()
        _, fit_seconds = fit_predict(s["task"], s["model"], s["epochs"], s["seed"], data.train_y,
                                     np.arange(len(data.train_y)))
        return {"train_seconds": fit_seconds, "wall_seconds": time.perf_counter() - started,
                "cpu_seconds": cpu_seconds() - cpu}

    def analysis(self, experiment: Experiment) -> dict[str, Any]:
        from training.evidence import analyses

        return analyses.ANALYSES[experiment.settings["analysis"]](self, experiment)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the run's
    writer process): on a machine other jobs share, a steadier measure of cost than wall time."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def warm_up(task: str) -> None:
    """Load ``task``'s data (cached per process) before a run is timed, so the first run of a
    task in this process is not charged for it."""
    from training.tasks import SEQUENCE_TASKS, load_task

    if task in SEQUENCE_TASKS:
        from training.pydoc_lm import load_pydoc_lm

        load_pydoc_lm()
    else:
        load_task(task)


def run_result(store: Any, run_id: str, wall: float) -> dict[str, Any]:
    """What the report needs of a finished run: accuracies, the validation curve, steps."""
    from store import epoch_metrics, steps

    info = store.run_info(run_id)
    curve = epoch_metrics(store, run_id)
    per_epoch = steps(store, run_id).groupby("epoch").size()
    accuracy = curve["val_accuracy"].dropna()
    return {
        "run_id": run_id,
        "status": info.get("status"),
        "wall_seconds": wall,
        "best_val_accuracy": float(accuracy.max()) if len(accuracy) else None,
        "final_val_accuracy": float(accuracy.iloc[-1]) if len(accuracy) else None,
        "val_loss": [float(v) for v in curve["val_loss"].tolist()],
        "steps_per_epoch": [int(v) for v in per_epoch.tolist()],
        "steps": int(per_epoch.sum()),
    }
