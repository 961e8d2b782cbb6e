"""What the report's sections share: the planned experiments with their records, number
formatting, Markdown tables and PNG figures (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evidence.plan import EvidenceConfig, Experiment
from training.evidence.records import Records


class Results:
    """The plan's experiments and, where finished, their results."""

    def __init__(self, plan: list[Experiment], records: Records, config: EvidenceConfig, seeds: int) -> None:
        self.plan = plan
        self.config = config
        self.seeds = seeds
        self.items = [(e, records.result(e.key)) for e in plan]

    @property
    def done(self) -> int:
        return sum(r is not None for _, r in self.items)

    def find(self, section: str | None = None, kind: str | None = None, **settings: Any) -> list[tuple[Experiment, dict]]:
        return [(e, r) for e, r in self.items
                if r is not None and (section is None or e.section == section) and (kind is None or e.kind == kind)
                and all(e.settings.get(k) == v for k, v in settings.items())]

    def planned(self, section: str | None = None, **settings: Any) -> int:
        return sum(1 for e, _ in self.items if (section is None or e.section == section)
                   and all(e.settings.get(k) == v for k, v in settings.items()))

    def base(self, task: str, model: str, noise: float) -> list[dict]:
        return [r for _, r in self.find("base", "train", task=task, model=model, label_noise=noise,
                                        grand=self.config.grand)]

    def by_label(self, section: str, **settings: Any) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for e, r in self.find(section, "train", **settings):
            if "label" in e.settings:
                out.setdefault(e.settings["label"], []).append(r)
        return out


def values(results: Iterable[dict], field: str) -> list[float]:
    out = []
    for r in results:
        value = r
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out.append(float(value))
    return out


def mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


def spread(xs: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``mean ± std (n)``: std with ddof=1 over seeds; one value: just it; none: ``–``."""
    if not len(xs):
        return "–"
    xs = [x * scale for x in xs]
    text = f"{np.mean(xs):.{digits}f}"
    if len(xs) > 1:
        text += f" ± {np.std(xs, ddof=1):.{digits}f}"
    return text + (f" (n={len(xs)})" if len(xs) != 1 else "")


def number(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def figure(ncols: int, nrows: int = 1, width: float = 4.2, height: float = 3.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, max(ncols, 1), figsize=(width * max(ncols, 1), height * nrows), squeeze=False)
    return fig, axes


def save(fig: Any, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"![{name}]({name})"


def percent(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"
