"""The report's last three sections: online rules at equal accuracy, score stability, and
the cost of scoring. Each returns its Markdown lines and writes its PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from training.evidence.metrics import STABILITY_SCORES
from training.evidence.sections import ACCURACY, SCORE_NAMES
from training.evidence.tables import Results, figure, mean, number, percent, save, spread, table, values


def paired(results: Results, task: str, model: str) -> tuple[dict[int, dict], dict[str, dict[int, dict]]]:
    """The online section's baselines and rule reruns of one task, by seed."""
    baselines: dict[int, dict] = {}
    rules: dict[str, dict[int, dict]] = {}
    for e, r in results.find("online", "train", task=task, model=model):
        if "label" in e.settings:
            rules.setdefault(e.settings["label"], {})[e.settings["seed"]] = r
        else:
            baselines[e.settings["seed"]] = r
    return baselines, rules


def saved(rule: dict[int, dict], baselines: dict[int, dict], field: str) -> list[float]:
    return [1 - r[field] / baselines[s][field] for s, r in rule.items() if s in baselines and baselines[s][field]]


def steps_to_reach(rerun: dict, target: float) -> int | None:
    """The steps ``rerun`` took until the end of the first epoch whose validation loss is at or
    below ``target``; None if none is."""
    total = 0
    for loss, count in zip(rerun["val_loss"], rerun["steps_per_epoch"]):
        total += count
        if loss <= target:
            return total
    return None


def online(results: Results, out: Path) -> list[str]:
    c = results.config
    lines = ["## 4. Online rules at equal accuracy", "",
             "On clean labels, against a baseline with the same settings (recorded, GraNd off). The one-cycle "
             "learning-rate schedule of an InfoBatch rerun is sized for its expected pruned epochs "
             "(`training.curriculum_run.expected_fit_steps`), so it ends when training does, as in the InfoBatch "
             "paper. Saved = 1 − rerun / baseline, paired by seed; accuracy differences in percentage points.", ""]
    tasks = list(c.tasks) + ([(c.lm[0], "gpt")] if c.lm else [])
    fig, axes = figure(1)
    ax = axes[0][0]
    for task, model in tasks:
        baselines, rules = paired(results, task, model)
        if not baselines:
            continue
        lm = model == "gpt"
        base = list(baselines.values())
        if lm:
            header = ["run", "final val loss (bits/byte)", "wall seconds", "wall saved", "CPU saved", "steps",
                      "steps saved", "steps to the baseline's final val loss"]
            rows = [["baseline", spread([r["val_loss"][-1] / math.log(2) for r in base]),
                     spread(values(base, "wall_seconds"), 1), "–", "–", spread(values(base, "steps"), 0), "–", "–"]]
        else:
            header = ["run", "final val accuracy", "Δ accuracy (pp)", "wall seconds", "wall saved", "CPU saved",
                      "steps", "steps saved"]
            rows = [["baseline", spread(values(base, ACCURACY)), "–", spread(values(base, "wall_seconds"), 1),
                     "–", "–", spread(values(base, "steps"), 0), "–"]]
        for label, _, _ in c.online:
            rule = rules.get(label, {})
            runs = list(rule.values())
            wall = saved(rule, baselines, "wall_seconds")
            steps = saved(rule, baselines, "steps")
            cpu = [x for x in (1 - r["cpu_seconds"] / baselines[seed]["cpu_seconds"] for seed, r in rule.items()
                               if seed in baselines and r.get("cpu_seconds") and baselines[seed].get("cpu_seconds"))]
            cpu_cell = spread(cpu, 1, 100) + " %" if cpu else "–"
            if lm:
                reached = [steps_to_reach(r, baselines[s]["val_loss"][-1]) for s, r in rule.items() if s in baselines]
                hit = [x for x in reached if x is not None]
                reach = (f"{spread(hit, 0)} ({len(hit)} of {len(reached)} seeds reach it)" if reached else "–")
                rows.append([label, spread([r["val_loss"][-1] / math.log(2) for r in runs]),
                             spread(values(runs, "wall_seconds"), 1), spread(wall, 1, 100) + " %" if wall else "–",
                             cpu_cell, spread(values(runs, "steps"), 0), spread(steps, 1, 100) + " %" if steps else "–",
                             reach])
            else:
                delta = [r[ACCURACY] - baselines[s][ACCURACY] for s, r in rule.items() if s in baselines]
                rows.append([label, spread(values(runs, ACCURACY)), spread(delta, 1, 100),
                             spread(values(runs, "wall_seconds"), 1), spread(wall, 1, 100) + " %" if wall else "–",
                             cpu_cell, spread(values(runs, "steps"), 0),
                             spread(steps, 1, 100) + " %" if steps else "–"])
                if (cpu or wall) and delta:
                    ax.scatter([100 * mean(cpu or wall)], [100 * mean(delta)], label=f"{task}: {label}"[:48])
        lines += [f"**{task} / {model}**", ""] + table(header, rows)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("CPU time saved (%)")
    ax.set_ylabel("Δ final val accuracy vs baseline (pp)")
    ax.set_title("online rules: cost saved vs accuracy")
    if ax.collections:
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    lines += ["InfoBatch's claim is lossless training at 30–40 % less cost: read it off the Δ accuracy and "
              "wall saved columns (a Δ within the baseline's seed spread is lossless here).", "",
              save(fig, out, "online.png"), ""]
    return lines


def stability(results: Results, out: Path) -> list[str]:
    c = results.config
    lines = ["## 5. Stability of the scores", "",
             f"Spearman rank correlation of each score (over all epochs of the clean runs) between pairs of "
             f"seeds of the same model (mean over pairs), and between each task's model and the "
             f"{c.stability_model} on the same seed (mean over seeds).", ""]
    columns: list[str] = []
    matrix: dict[str, dict[str, float]] = {}
    for task, model in c.tasks:
        found = results.find("stability", "analysis", task=task)
        if not found:
            continue
        spearman = found[0][1]["spearman"]
        heads = list(next(iter(spearman.values())).keys())
        rows = [[SCORE_NAMES[name], *[number(spearman[name].get(h)) for h in heads]] for name in STABILITY_SCORES
                if name in spearman]
        lines += [f"**{task}** ({found[0][1]['seeds']} seed(s))", ""] + table(["score", *heads], rows)
        for h in heads:
            column = f"{task}: {h}"
            columns.append(column)
            for name in STABILITY_SCORES:
                matrix.setdefault(name, {})[column] = spearman.get(name, {}).get(h, float("nan"))
    fig, axes = figure(1, width=max(4.0, 1.3 * len(columns) + 2), height=3.2)
    ax = axes[0][0]
    if columns:
        grid = np.array([[matrix[name].get(col, np.nan) for col in columns] for name in STABILITY_SCORES],
                        dtype=float)
        image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(STABILITY_SCORES)), [SCORE_NAMES[s] for s in STABILITY_SCORES], fontsize=8)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if grid[i, j] == grid[i, j]:
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_title("Spearman correlation")
    lines += [save(fig, out, "stability.png"), ""]
    return lines


def cost(results: Results, out: Path) -> list[str]:
    c = results.config
    lines = ["## 6. Cost of scoring", "",
             "Wall time of a whole run (data, model, training, recording and compaction; mean ± std over seeds) "
             "as a fraction of the same training without recording (`training.evidence.plain`). The summary "
             "queries are timed on a recorded run with GraNd: the per-sample summary that compaction "
             "materialises, and the same recomputed by DuckDB from the presentations.", ""]
    fig, axes = figure(len(c.tasks))
    for column, (task, model) in enumerate(c.tasks):
        found = [r for _, r in results.find("cost", "analysis", task=task)]
        if not found:
            continue
        plain = values(found, "plain_seconds")
        base, base_cpu = mean(plain), mean(values(found, "plain_cpu_seconds"))

        def row(label: str, wall: list[float], cpu: list[float], digits: int = 2) -> list[str]:
            return [label, spread(wall, digits), number(mean(wall) / base, digits), spread(cpu, digits),
                    number(mean(cpu) / base_cpu, digits) if cpu else "–"]

        rows = [row("training without recording", plain, values(found, "plain_cpu_seconds")),
                row("recorded (trainmap train, GraNd off)", values(found, "recorded_seconds"),
                    values(found, "recorded_cpu_seconds"))]
        for schedule in found[0]["grand_seconds"]:
            rows.append(row(f"recorded + GraNd `{schedule}`",
                            [r["grand_seconds"][schedule] for r in found if schedule in r["grand_seconds"]],
                            [r["grand_cpu_seconds"][schedule] for r in found
                             if (r.get("grand_cpu_seconds") or {}).get(schedule) is not None]))
        for label in found[0]["query_seconds"]:
            rows.append(row(label, [r["query_seconds"][label] for r in found if label in r["query_seconds"]], [], 3))
        lines += [f"**{task} / {model}** ({len(found)} seed(s))", ""]
        lines += table(["what", "wall seconds", "× training without recording (wall)", "CPU seconds",
                        "× (CPU)"], rows)
        ax = axes[0][column]
        names = [r[0] for r in rows]
        heights = [float(r[2]) for r in rows]
        ax.barh(range(len(rows)), heights, color="#48c")
        ax.set_yticks(range(len(rows)), [n[:34] for n in names], fontsize=7)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("× training without recording")
        ax.set_title(f"{task} / {model}")
    lines += [save(fig, out, "cost.png"), ""]
    return lines
