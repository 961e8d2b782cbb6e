"""The report's first three sections: noise finding vs cleanlab, Data Diet pruning, and
noise-down-weighted reruns. Each returns its Markdown lines and writes its PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.evidence.metrics import NOISE_SCORES
from training.evidence.tables import Results, figure, mean, median, number, percent, save, spread, table, values

#: the accuracy every section reports: the last epoch's validation accuracy (no model selection
#: on the held-out split; the tasks have no separate test split)
ACCURACY = "final_val_accuracy"
SCORE_NAMES = {"loss": "loss", "el2n": "EL2N", "aum": "AUM", "confidence": "confidence",
               "forgetting_events": "forgetting events", "grand": "GraNd"}


def noise(results: Results, out: Path) -> list[str]:
    c = results.config
    lines = ["## 1. Noise finding vs cleanlab", "",
             f"Each run trains on labels with symmetric noise (`--label-noise p`, noise seed 0, so all seeds share "
             f"the flipped labels) and scores every sample from that *one* run (GraNd on `{c.grand}`). "
             f"cleanlab ({c.folds}-fold cross-validated predicted probabilities of the same model and epochs, "
             "trained by the same code without recording) ranks by `get_label_quality_scores` (self-confidence) "
             "and flags with `find_label_issues`. AUROC: flipped vs clean; precision at the noise rate: the share "
             "of flipped labels among the hardest p·N samples. Per-run values are mean ± std over seeds; "
             "\"seed-averaged\" ranks by the score averaged over the seeds' runs. Training seconds: wall time "
             "and CPU time (this process and the run's writer) of the trainmap run (recording and GraNd included) "
             "and of all cleanlab folds together. In samples trained on, "
             f"one run is 1/{c.folds - 1} of the {c.folds} folds ({c.folds - 1} runs' worth of data), and "
             f"1/{c.folds} once cleanlab's workflow trains its final model on all data.", ""]
    fig, axes = figure(len(c.tasks))
    verdicts = []
    for column, (task, model) in enumerate(c.tasks):
        ax = axes[0][column]
        curves: dict[str, list[tuple[float, float]]] = {}
        for p in c.noise_rates:
            runs = results.base(task, model, p)
            cv = [r for _, r in results.find("noise", "cv", task=task, model=model, label_noise=p)]
            averaged = [r for _, r in results.find("noise", "analysis", task=task, label_noise=p)]
            if not runs and not cv:
                continue
            lines.append(f"**{task} / {model}, {percent(p, 0)} noise** ({len(runs)} trainmap run(s), "
                         f"{len(cv)} cleanlab CV run(s))")
            lines.append("")
            rows = []
            run_cost = mean(values(runs, "wall_seconds"))
            cv_cost = mean(values(cv, "wall_seconds"))
            # medians: a run slowed down by other jobs on a shared machine does not decide the ratio
            run_cpu, cv_cpu = median(values(runs, "cpu_seconds")), median(values(cv, "cpu_seconds"))
            for score in NOISE_SCORES:
                au = values(runs, f"noise.{score}.auroc")
                if not au:
                    continue
                avg = values(averaged, f"noise.{score}.auroc")
                rows.append([SCORE_NAMES[score], spread(au), number(avg[0]) if avg else "–",
                             spread(values(runs, f"noise.{score}.precision_at_rate")),
                             f"{number(run_cost, 1)} / {number(run_cpu, 1)}"])
                curves.setdefault(SCORE_NAMES[score], []).append((p, mean(au)))
            cl = values(cv, "label_quality.auroc")
            rows.append(["cleanlab label quality", spread(cl), "–",
                         spread(values(cv, "label_quality.precision_at_rate")),
                         f"{number(cv_cost, 1)} / {number(cv_cpu, 1)}"])
            rows.append(["cleanlab find_label_issues (precision / recall)", "–", "–",
                         f"{spread(values(cv, 'find_label_issues.precision'))} / "
                         f"{spread(values(cv, 'find_label_issues.recall'))}",
                         f"{number(cv_cost, 1)} / {number(cv_cpu, 1)}"])
            if cl:
                curves.setdefault("cleanlab", []).append((p, mean(cl)))
            lines += table(["score", "AUROC (per run)", "AUROC (seed-averaged)", "precision at noise rate",
                            "training seconds (wall / CPU)"], rows)
            best = max(((mean(values(runs, f"noise.{s}.auroc")), SCORE_NAMES[s]) for s in NOISE_SCORES
                        if values(runs, f"noise.{s}.auroc")), default=None)
            if best and cl:
                gap = best[0] - mean(cl)
                ratio = run_cpu / cv_cpu if cv_cpu == cv_cpu and cv_cpu else run_cost / cv_cost
                match = "matches" if gap >= -0.01 else "does **not** match"
                cost = "at most" if ratio <= 0.2 else "**more than**"
                verdicts.append(f"- {task}, {percent(p, 0)} noise: the best trainmap score ({best[1]}, AUROC "
                                f"{best[0]:.3f}) {match} cleanlab ({mean(cl):.3f}; difference {gap:+.3f}, goal ≥ "
                                f"-0.010), at {ratio:.2f} of its measured CPU time (medians over seeds; {cost} one "
                                f"fifth); in samples trained on, at 1/{c.folds - 1} of it.")
        for name, points in curves.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", linestyle="--" if name == "cleanlab" else "-", label=name)
        ax.set_title(f"{task} / {model}")
        ax.set_xlabel("label noise")
        ax.set_ylabel("AUROC (flipped vs clean)")
        if curves:
            ax.legend(fontsize=7)
    loads = [x for _, r in results.find("noise") + results.find("base") for x in [r.get("load_average")] if x]
    lines += ["Verdict (numbers above). Times are measured on a machine other jobs share"
              + (f" (1-minute load average {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} "
                 "cores when these experiments started)" if loads else "")
              + ": a contended run is slower in wall and in CPU time, so the cost ratios are rough; the ratio in "
              "samples trained on is exact.", ""]
    lines += verdicts or ["- no finished pair of trainmap and cleanlab runs yet"]
    lines += ["", save(fig, out, "noise.png"), ""]
    return lines


def prune(results: Results, out: Path) -> list[str]:
    c = results.config
    lines = ["## 2. Pruning: the Data Diet protocol", "",
             f"Scores are averaged over the seeds' clean runs (\"early\": epochs 0–{c.early_epochs - 1} of "
             f"{'/'.join(str(e) for e in sorted(set(c.epochs.values())))}; GraNd at init: before the first "
             "update), a curriculum keeps the given fraction, and each seed reruns it with `--keep-steps` (the "
             "full data's number of optimisation steps). Cells: final validation accuracy, mean ± std over "
             "seeds; ↓ marks a mean below random pruning's at that fraction.", ""]
    fig, axes = figure(len(c.tasks), height=3.6)
    losers = []
    for column, (task, model) in enumerate(c.tasks):
        ax = axes[0][column]
        groups: dict[str, dict[float, list[float]]] = {}
        for e, r in results.find("prune", "train", task=task, model=model):
            keep = e.settings["curriculum"]["params"]["keep"]
            groups.setdefault(e.settings["label"], {}).setdefault(keep, []).append(r[ACCURACY])
        if not groups:
            continue
        full = values(results.base(task, model, 0.0), ACCURACY)
        random = groups.get("random", {})
        rows = [["full data (no pruning)", *[spread(full)] * len(c.keeps)]]
        for strategy in c.prune:
            cells = []
            accs = groups.get(strategy.label, {})
            for keep in c.keeps:
                xs = accs.get(keep, [])
                cell = spread(xs)
                if xs and strategy.label != "random" and random.get(keep) and mean(xs) < mean(random[keep]):
                    cell += " ↓"
                    losers.append(f"{task}: {strategy.label} at {percent(keep, 0)} kept "
                                  f"({mean(xs):.3f} vs random {mean(random[keep]):.3f})")
                cells.append(cell)
            rows.append([strategy.label, *cells])
            points = [(k, mean(accs[k])) for k in c.keeps if accs.get(k)]
            if points:
                xs, ys = zip(*points)
                errs = [float(np.std(accs[k], ddof=1)) if len(accs[k]) > 1 else 0.0
                        for k in xs]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=2,
                            linestyle="--" if strategy.label == "random" else "-", label=strategy.label)
        if full:
            ax.axhline(mean(full), color="black", linewidth=0.8, label="full data")
        lines += [f"**{task} / {model}**", ""]
        lines += table(["strategy", *[f"{percent(k, 0)} kept" for k in c.keeps]], rows)
        ax.set_title(f"{task} / {model}")
        ax.set_xlabel("fraction kept")
        ax.set_ylabel("final validation accuracy")
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    lines += ["Where a method loses to random:", ""]
    lines += [f"- {line}" for line in losers] or ["- nowhere in the finished runs"]
    lines += ["", save(fig, out, "prune.png"), ""]
    return lines


def reweight(results: Results, out: Path) -> list[str]:
    c = results.config
    p = c.reweight_noise
    lines = ["## 3. Noise-down-weighted reruns", "",
             f"At {percent(p, 0)} label noise: the noisy baseline, reruns on curricula built from that seed's "
             f"noisy run (the hardest {percent(p, 0)} by the score suspected: hard mode drops them, soft mode "
             "weights them by a logistic in the percentile, relabel gives them their suggested label), and the "
             "clean-label run. Gap closed = (rerun − noisy) / (clean − noisy), on the mean final validation "
             "accuracy over seeds. The fraction equals the true noise rate, which a user has to guess.", ""]
    fig, axes = figure(len(c.tasks))
    for column, (task, model) in enumerate(c.tasks):
        noisy = values(results.base(task, model, p), ACCURACY)
        clean = values(results.base(task, model, 0.0), ACCURACY)
        reruns = results.by_label("reweight", task=task, model=model)
        if not (noisy or reruns):
            continue
        gap = mean(clean) - mean(noisy)
        rows = [["noisy baseline", spread(noisy), "0 %", "–", "–"]]
        bars = [("noisy", mean(noisy))]
        for label, _, _, _ in c.reweight:
            runs = reruns.get(label, [])
            accs = values(runs, ACCURACY)
            closed = (mean(accs) - mean(noisy)) / gap if accs and gap > 0 else float("nan")
            removed = values(runs, "curriculum.flipped_below_half")
            clean_removed = values(runs, "curriculum.clean_below_half")
            relabelled = values(runs, "curriculum.flipped_relabelled_clean")
            flipped_cell = number(mean(removed), 0) if removed else "–"
            if relabelled:
                flipped_cell = f"{number(mean(relabelled), 0)} given their clean label"
            rows.append([label, spread(accs), percent(closed, 0), flipped_cell,
                         number(mean(clean_removed), 0) if clean_removed else "–"])
            bars.append((label, mean(accs)))
        rows.append(["clean labels", spread(clean), "100 %", "–", "–"])
        bars.append(("clean", mean(clean)))
        lines += [f"**{task} / {model}**", ""]
        if len(noisy) > 1 and gap <= 2 * float(np.std(noisy, ddof=1)):
            lines += [f"The gap between the noisy and the clean runs ({100 * gap:.1f} pp) is within twice the noisy "
                      "baseline's seed spread here, so \"gap closed\" says little.", ""]
        lines += table(["run", "final val accuracy", "gap closed", "flipped below weight 0.5 (of the flipped)",
                        "clean below weight 0.5"], rows)
        ax = axes[0][column]
        names, heights = zip(*bars)
        ax.barh(range(len(bars)), heights, color=["#c44"] + ["#48c"] * (len(bars) - 2) + ["#4a4"])
        ax.set_yticks(range(len(bars)), [n[:32] for n in names], fontsize=7)
        ax.set_xlabel("final validation accuracy")
        ax.set_title(f"{task} / {model}, {percent(p, 0)} noise")
        finite = [h for h in heights if h == h]
        if finite:
            ax.set_xlim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.02))
    lines += [save(fig, out, "reweight.png"), ""]
    return lines
