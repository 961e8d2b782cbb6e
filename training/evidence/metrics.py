"""The numbers the evidence sections compute from runs in the store: noise detection by each
score, rank stability, GraNd at initialisation. Torch-free (the store, NumPy, scikit-learn and SciPy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: the trainmap scores of the noise section, by their registry names
NOISE_SCORES = ("loss", "el2n", "aum", "confidence", "forgetting_events", "grand")
#: the scores whose rank stability the stability section measures
STABILITY_SCORES = ("el2n", "grand", "aum", "forgetting_events")


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (higher = more likely positive; ties count half,
    scikit-learn's ``roc_auc_score``); NaN when one class is absent."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(score, dtype=float)))


def detection(score: np.ndarray, positive: np.ndarray) -> dict[str, float]:
    """AUROC and precision at the positive rate (the hardest round(rate * N) samples: the
    share of them that are positive) of a hardness score."""
    score = np.asarray(score, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    k = int(positive.sum())
    top = np.argsort(-score, kind="stable")[:k]
    return {"auroc": auroc(score, positive), "precision_at_rate": float(positive[top].mean()) if k else float("nan")}


def oriented(summary: pd.DataFrame, name: str) -> np.ndarray | None:
    """Score ``name`` as hardness (higher = harder, the registry's direction), never-learned
    samples hardest and missing values easiest; ``None`` when the run has no such score."""
    from store import hardness

    if name not in summary or summary[name].isna().all():
        return None
    score = hardness(summary, name)
    finite = score[np.isfinite(score)]
    if len(finite) == 0:
        return None
    return score.replace(np.inf, finite.max() + 1).replace(-np.inf, finite.min() - 1).fillna(finite.min() - 1).to_numpy()


def noise_detection(summary: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``detection`` of the flipped labels by every score of ``NOISE_SCORES`` the summary has."""
    flipped = summary["label_noisy"].fillna(False).to_numpy(bool)
    out = {}
    for name in NOISE_SCORES:
        score = oriented(summary, name)
        if score is not None:
            out[name] = detection(score, flipped)
    return out


def init_grand(store: Any, run_ids: list[str]) -> pd.DataFrame:
    """GraNd before the first update (stored as epoch -1), averaged over ``run_ids``:
    ``sample_id, grand``. The summaries never average it in (Kirsch 2023: it does no better than
    random), so it is read here from the runs' ``grand`` files."""
    import pyarrow.parquet as pq

    frames = []
    for run_id in run_ids:
        files = store.table_files(run_id, "grand")
        if not files:
            raise ValueError(f"run {run_id} recorded no GraNd; expected a schedule with init+")
        table = pd.concat([pq.read_table(f, columns=["epoch", "sample_id", "grand"]).to_pandas() for f in files])
        init = table[table["epoch"] == -1]
        if init.empty:
            raise ValueError(f"run {run_id} has no GraNd at initialisation; expected a schedule with init+")
        frames.append(init.groupby("sample_id")["grand"].mean())
    return pd.concat(frames, axis=1).mean(axis=1).rename("grand").reset_index()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (SciPy's) over the pairs where both are known; NaN under 3 pairs."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~np.isnan(a) & ~np.isnan(b)
    if keep.sum() < 3:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)


def stability(summaries: dict[str, list[pd.DataFrame]], model: str, other: str | None) -> dict[str, dict[str, float]]:
    """Spearman correlation of each ``STABILITY_SCORES`` between seeds of ``model`` (mean over
    pairs of seeds) and between ``model`` and ``other`` on the same seed (mean over seeds)."""
    out: dict[str, dict[str, float]] = {}
    for name in STABILITY_SCORES:
        row: dict[str, float] = {}
        runs = [s.set_index("sample_id")[name] for s in summaries[model] if name in s]
        pairs = [spearman(runs[i], runs[j].reindex(runs[i].index)) for i in range(len(runs))
                 for j in range(i + 1, len(runs))]
        row["across seeds"] = float(np.nanmean(pairs)) if pairs and not np.all(np.isnan(pairs)) else float("nan")
        if other is not None and other in summaries:
            others = [s.set_index("sample_id")[name] for s in summaries[other] if name in s]
            values = [spearman(a, b.reindex(a.index)) for a, b in zip(runs, others)]
            row[f"{model} vs {other}"] = float(np.nanmean(values)) if values else float("nan")
        out[name] = row
    return out
