"""The plan of ``trainmap evidence``: every experiment of the report, its settings and what
it needs first.

An ``Experiment`` is one unit of work whose result is one JSON record
(``training.evidence.records``), keyed by a hash of its kind and full settings: the same
settings on any machine give the same key, so a record committed under
``docs/evidence/results/`` is never redone. Kinds:

* ``train``: one ordinary ``trainmap train`` run into the store (its name
  ``evidence-<section>-<task>-<model>-noise<p>-seed<s>-<variant>``), on a curriculum built from
  the runs of its ``deps`` when it has one;
* ``cv``: cleanlab's label-quality scores from K-fold cross-validated predicted
  probabilities of the same model (plain training, nothing recorded: ``training.evidence.plain``);
* ``plain``: the same model trained on all data without recording (the cost baseline);
* ``analysis``: numbers computed from the runs of its ``deps`` (seed-averaged scores,
  rank stability, query timings).

Runs shared by several sections (the noisy and clean baselines) are one experiment each.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("noise", "prune", "reweight", "online", "stability", "cost")
#: the order experiments run in: pruning, with the most runs, last
RUN_ORDER = ("noise", "reweight", "online", "stability", "cost", "prune")


@dataclass(frozen=True)
class Experiment:
    section: str
    kind: str
    name: str
    settings: dict[str, Any]
    deps: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        text = json.dumps({"kind": self.kind, "settings": self.settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PruneStrategy:
    """A Data Diet pruning strategy: ``strategy`` by ``score`` over ``epochs`` ("early": the
    first ``early_epochs``; "all"; "init": GraNd before the first update), scores averaged
    over the seeds' clean runs."""

    label: str
    strategy: str
    score: str | None = None
    epochs: str = "all"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvidenceConfig:
    name: str
    tasks: tuple[tuple[str, str], ...]  # (task, model): the model of every section
    epochs: dict[str, int]
    noise_rates: tuple[float, ...]
    grand: str  # the baselines' GraNd schedule
    early_epochs: int  # "early": epochs 0 .. early_epochs - 1
    keeps: tuple[float, ...]
    prune: tuple[PruneStrategy, ...]
    reweight: tuple[tuple[str, str, str | None, dict[str, Any]], ...]  # label, strategy, score, params
    reweight_noise: float
    online: tuple[tuple[str, str, dict[str, Any]], ...]  # label, strategy, params
    folds: int
    stability_model: str  # compared with each task's model
    cost_grand: tuple[str, ...]  # GraNd schedules timed besides the baselines'
    lm: tuple[str, int] | None  # (task, epochs) of the language model, or None


def default_prune() -> tuple[PruneStrategy, ...]:
    return (
        PruneStrategy("EL2N early, keep hard", "keep-hard", "el2n", "early"),
        PruneStrategy("EL2N early, keep easy", "keep-easy", "el2n", "early"),
        PruneStrategy("EL2N early, offset window (skip 10 %)", "offset", "el2n", "early", {"skip": 0.1}),
        PruneStrategy("GraNd early, keep hard", "keep-hard", "grand", "early"),
        PruneStrategy("GraNd at init, keep hard", "keep-hard", "grand", "init"),
        PruneStrategy("forgetting, keep hard", "keep-hard", "forgetting_events"),
        PruneStrategy("AUM, keep hard", "keep-hard", "aum"),
        PruneStrategy("cartography: most ambiguous (variability)", "keep-hard", "variability"),
        PruneStrategy("cartography: hardest to learn (confidence)", "keep-hard", "confidence"),
        PruneStrategy("stratified / coverage (EL2N early)", "stratified", "el2n", "early", {"bins": 10}),
        PruneStrategy("random", "random"),
    )


def full_config() -> EvidenceConfig:
    return EvidenceConfig(
        name="full",
        tasks=(("mnist1d", "cnn"), ("digits", "cnn"), ("mnist5k", "cnn")),
        epochs={"mnist1d": 20, "digits": 20, "mnist5k": 20},
        noise_rates=(0.1, 0.2, 0.4),
        grand="init+every:2",
        early_epochs=4,
        keeps=(0.3, 0.5, 0.7),
        prune=default_prune(),
        reweight=(
            ("downweight-noise hard, loss", "downweight-noise", "loss", {"mode": "hard"}),
            ("downweight-noise hard, AUM", "downweight-noise", "aum", {"mode": "hard"}),
            ("downweight-noise hard, EL2N", "downweight-noise", "el2n", {"mode": "hard"}),
            ("downweight-noise soft, loss", "downweight-noise", "loss", {"mode": "soft"}),
            ("downweight-noise soft, AUM", "downweight-noise", "aum", {"mode": "soft"}),
            ("relabel, loss", "relabel", "loss", {}),
        ),
        reweight_noise=0.2,
        online=(
            ("InfoBatch (r 0.5, delta 0.875)", "infobatch", {"prune_ratio": 0.5, "delta": 0.875}),
            ("loss reweighting (linear-upper, tau 1)", "loss-reweight", {"g": "linear-upper", "tau": 1.0}),
            ("loss reweighting (quadratic, tau 0.5)", "loss-reweight", {"g": "quadratic", "tau": 0.5}),
        ),
        folds=5,
        stability_model="mlp",
        cost_grand=("every:5", "every:1"),
        lm=("pydoc-lm", 5),
    )


def tiny_config() -> EvidenceConfig:
    """One small task, 2 epochs, one noise rate, a few strategies: the end-to-end test."""
    return EvidenceConfig(
        name="tiny",
        tasks=(("digits", "mlp"),),
        epochs={"digits": 2},
        noise_rates=(0.2,),
        grand="init+every:1",
        early_epochs=1,
        keeps=(0.5,),
        prune=(PruneStrategy("EL2N early, keep hard", "keep-hard", "el2n", "early"),
               PruneStrategy("GraNd at init, keep hard", "keep-hard", "grand", "init"),
               PruneStrategy("random", "random")),
        reweight=(("downweight-noise hard, loss", "downweight-noise", "loss", {"mode": "hard"}),),
        reweight_noise=0.2,
        online=(("InfoBatch (r 0.5, delta 0.875)", "infobatch", {"prune_ratio": 0.5, "delta": 0.875}),),
        folds=2,
        stability_model="cnn",
        cost_grand=(),
        lm=None,
    )


CONFIGS = {"full": full_config, "tiny": tiny_config}


def noise_tag(noise: float) -> str:
    return f"noise{round(noise * 100):02d}"


def run_name(section: str, task: str, model: str, noise: float, seed: int, variant: str = "") -> str:
    suffix = f"-{variant}" if variant else ""
    return f"evidence-{section}-{task}-{model}-{noise_tag(noise)}-seed{seed}{suffix}"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")[:60]


class Planner:
    """Builds the experiments of a configuration, sharing the runs several sections need."""

    def __init__(self, config: EvidenceConfig, seeds: int) -> None:
        self.config = config
        self.seeds = tuple(range(seeds))
        self.experiments: dict[str, Experiment] = {}

    def add(self, experiment: Experiment) -> str:
        self.experiments.setdefault(experiment.key, experiment)
        return experiment.key

    def base(self, task: str, model: str, noise: float, seed: int, grand: str | None = "default",
             section: str = "base") -> str:
        """A plain recorded run (the baselines): GraNd on the configuration's schedule."""
        grand = self.config.grand if grand == "default" else grand
        variant = "" if grand == self.config.grand else ("nogrand" if grand is None else f"grand-{slug(grand)}")
        settings = {"task": task, "model": model, "epochs": self.config.epochs.get(task), "seed": seed,
                    "label_noise": noise, "grand": grand}
        return self.add(Experiment(section, "train", run_name(section, task, model, noise, seed, variant), settings))

    def plan(self, sections: tuple[str, ...] = SECTIONS) -> list[Experiment]:
        """The experiments of ``sections`` (and what they need), section by section over the
        tasks, pruning (the most runs) last, so a partial regeneration covers every section."""
        for section in RUN_ORDER:
            if section in sections:
                self.plan_section(section)
        return self.ordered()

    def plan_section(self, section: str) -> None:
        c = self.config
        sections = (section,)
        for task, model in c.tasks:
            epochs = c.epochs[task]
            if "noise" in sections:
                for noise in c.noise_rates:
                    runs = [self.base(task, model, noise, s) for s in self.seeds]
                    for seed, run in zip(self.seeds, runs):
                        self.add(Experiment("noise", "cv", run_name("noise", task, model, noise, seed, "cleanlab"),
                                            {"task": task, "model": model, "epochs": epochs, "seed": seed,
                                             "label_noise": noise, "folds": c.folds}))
                    self.add(Experiment("noise", "analysis", f"evidence-noise-{task}-{model}-{noise_tag(noise)}-avg",
                                        {"analysis": "noise-averaged", "task": task, "model": model,
                                         "label_noise": noise, "runs": runs}, tuple(runs)))
            if "prune" in sections:
                clean = tuple(self.base(task, model, 0.0, s) for s in self.seeds)
                for strategy in c.prune:
                    for keep in c.keeps:
                        for seed in self.seeds:
                            settings = {"task": task, "model": model, "epochs": epochs, "seed": seed,
                                        "label_noise": 0.0, "grand": None, "keep_steps": True,
                                        "curriculum": {"strategy": strategy.strategy, "score": strategy.score,
                                                       "epochs": strategy.epochs, "early_epochs": c.early_epochs,
                                                       "params": {"keep": keep, **strategy.params},
                                                       "sources": list(clean)},
                                        "label": strategy.label}
                            variant = f"{slug(strategy.label)}-keep{round(keep * 100)}"
                            self.add(Experiment("prune", "train", run_name("prune", task, model, 0.0, seed, variant),
                                                settings, clean))
            if "reweight" in sections:
                noise = c.reweight_noise
                for seed in self.seeds:
                    self.base(task, model, 0.0, seed)
                    noisy = self.base(task, model, noise, seed)
                    for label, strategy, score, params in c.reweight:
                        settings = {"task": task, "model": model, "epochs": epochs, "seed": seed,
                                    "label_noise": noise, "grand": None, "keep_steps": False,
                                    "curriculum": {"strategy": strategy, "score": score, "epochs": "all",
                                                   "params": {"fraction": noise, **params}, "sources": [noisy]},
                                    "label": label}
                        self.add(Experiment("reweight", "train",
                                            run_name("reweight", task, model, noise, seed, slug(label)),
                                            settings, (noisy,)))
            if "online" in sections or "cost" in sections:
                for seed in self.seeds:
                    baseline = self.base(task, model, 0.0, seed, grand=None, section="online")
                    if "online" not in sections:
                        continue
                    for label, strategy, params in c.online:
                        self.add(self.online_run(task, model, epochs, seed, label, strategy, params, baseline))
            if "stability" in sections:
                runs = {m: [self.base(task, m, 0.0, s) for s in self.seeds]
                        for m in dict.fromkeys((model, c.stability_model))}
                self.add(Experiment("stability", "analysis", f"evidence-stability-{task}",
                                    {"analysis": "stability", "task": task, "runs": runs},
                                    tuple(k for keys in runs.values() for k in keys)))
            if "cost" in sections:
                for seed in self.seeds:
                    plain = self.add(Experiment("cost", "plain", run_name("cost", task, model, 0.0, seed, "plain"),
                                                {"task": task, "model": model, "epochs": epochs, "seed": seed}))
                    recorded = self.base(task, model, 0.0, seed, grand=None, section="online")
                    grand = {c.grand: self.base(task, model, 0.0, seed)}
                    for schedule in c.cost_grand:
                        grand[schedule] = self.base(task, model, 0.0, seed, grand=schedule, section="cost")
                    self.add(Experiment("cost", "analysis", f"evidence-cost-{task}-seed{seed}",
                                        {"analysis": "cost", "task": task, "seed": seed, "plain": plain,
                                         "recorded": recorded, "grand": grand},
                                        (plain, recorded, *grand.values())))
        if c.lm is not None and "online" in sections:
            task, epochs = c.lm
            for seed in self.seeds:
                baseline = self.add(Experiment("online", "train", run_name("online", task, "gpt", 0.0, seed, "nogrand"),
                                               {"task": task, "model": "gpt", "epochs": epochs, "seed": seed,
                                                "label_noise": 0.0, "grand": None}))
                for label, strategy, params in c.online:
                    self.add(self.online_run(task, "gpt", epochs, seed, label, strategy, params, baseline))

    def online_run(self, task: str, model: str, epochs: int, seed: int, label: str, strategy: str,
                   params: dict[str, Any], baseline: str) -> Experiment:
        settings = {"task": task, "model": model, "epochs": epochs, "seed": seed, "label_noise": 0.0,
                    "grand": None, "keep_steps": False,
                    "curriculum": {"strategy": strategy, "score": None, "epochs": "all", "params": params,
                                   "sources": [baseline]},
                    "label": label}
        return Experiment("online", "train", run_name("online", task, model, 0.0, seed, slug(label)), settings,
                          (baseline,))

    def ordered(self) -> list[Experiment]:
        """Every experiment after the ones it needs (in plan order otherwise)."""
        done: dict[str, Experiment] = {}

        def visit(key: str) -> None:
            if key in done:
                return
            experiment = self.experiments[key]
            for dep in experiment.deps:
                visit(dep)
            done[key] = experiment

        for key in list(self.experiments):
            visit(key)
        return list(done.values())


def build_plan(config: EvidenceConfig, seeds: int, sections: tuple[str, ...] = SECTIONS) -> list[Experiment]:
    return Planner(config, seeds).plan(sections)
