"""The curriculum file: the one module that reads, writes and validates it.

Parquet with the metadata as JSON under the Arrow schema-metadata key
``trainmap.curriculum``, or CSV with a JSON side-car ``FILE.csv.json`` (``FILE.json`` is
read too). Columns ``sample_id, weight`` and, for pacing, ``start_epoch, stage``; for
relabelling, ``label`` (the class each sample trains on; classification tasks only, an
integer in ``[0, num_classes)``). A plain
two-column ``sample_id,weight`` file made with pandas is accepted; samples of the dataset
that a file does not list are pruned (weight 0). ``load_curriculum`` validates everything
and raises ``CurriculumError`` (a ``StoreError`` and a ``ValueError``) naming the problem
in one line. Copies of built curricula are kept in ``<store>/curricula/``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.curriculum.errors import CurriculumError
from store.curriculum.groups import check_group_weights
from store.curriculum.registry import check_online, online_strategy
from store.files import atomic_path, is_temporary, json_text, write_atomic, write_text_atomic

#: Version of the curriculum file format; a file with a higher version is refused.
FORMAT_VERSION = 1
METADATA_KEY = b"trainmap.curriculum"
REQUIRED_COLUMNS = ("sample_id", "weight")
OPTIONAL_COLUMNS = ("start_epoch", "stage", "label")
FILE_SUFFIXES = (".parquet", ".csv")


@dataclass
class Curriculum:
    """One row per sample (``table``) plus provenance (``metadata``)."""

    table: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def strategy(self) -> str | None:
        return self.metadata.get("strategy")

    @property
    def online(self) -> dict[str, Any] | None:
        return self.metadata.get("online")

    @property
    def group_weights(self) -> dict[str, float] | None:
        """The group-weights table the file was built from (``{group name: weight}``), or None."""
        table = (self.metadata.get("params") or {}).get("group_weights")
        return None if table is None else dict(table)

    @property
    def label(self) -> str:
        """Short human-readable name recorded with the rerun (``run.json: curriculum``)."""
        meta = self.metadata
        if meta.get("name"):
            return str(meta["name"])
        parts = [meta.get("strategy") or "file"]
        if meta.get("score"):
            parts.append(str(meta["score"]))
        for key, value in sorted((meta.get("params") or {}).items()):
            if isinstance(value, dict):  # a table (group_weights): {docs: 2, code: 0.5}
                value = "{" + ", ".join(f"{name}: {weight:g}" for name, weight in value.items()) + "}"
            parts.append(f"{key}={value}")
        return " ".join(parts)

    def weights_for(self, sample_ids: np.ndarray) -> np.ndarray:
        """Weight of each of ``sample_ids`` (0 for samples the file does not list)."""
        lookup = pd.Series(self.table["weight"].to_numpy(float), index=self.table["sample_id"].to_numpy())
        return np.array(lookup.reindex(np.asarray(sample_ids)).fillna(0.0), dtype=np.float64)

    def start_epochs_for(self, sample_ids: np.ndarray) -> np.ndarray | None:
        if "start_epoch" not in self.table:
            return None
        lookup = pd.Series(self.table["start_epoch"].to_numpy(np.int64), index=self.table["sample_id"].to_numpy())
        return np.array(lookup.reindex(np.asarray(sample_ids)).fillna(0), dtype=np.int64)

    def labels_for(self, sample_ids: np.ndarray, current: np.ndarray) -> np.ndarray | None:
        """The label each of ``sample_ids`` trains on (``current`` where the file lists none),
        or None when the file has no ``label`` column."""
        if "label" not in self.table:
            return None
        lookup = pd.Series(self.table["label"].to_numpy(np.int64), index=self.table["sample_id"].to_numpy())
        found = lookup.reindex(np.asarray(sample_ids))
        return np.where(found.isna(), np.asarray(current), found.fillna(0)).astype(np.int64)

    def summary(self) -> dict[str, Any]:
        weights = self.table["weight"].to_numpy(float)
        return {
            "samples": int(len(weights)),
            "kept": int((weights > 0).sum()),
            "pruned": int((weights == 0).sum()),
            "mean_weight_kept": float(weights[weights > 0].mean()) if (weights > 0).any() else 0.0,
        }


# -- writing -----------------------------------------------------------------------------


def sidecar_paths(path: Path) -> list[Path]:
    """Where a CSV's metadata may live: ``FILE.csv.json`` (written), then ``FILE.json``."""
    return [path.with_name(path.name + ".json"), path.with_suffix(".json")]


def file_columns(table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` a file holds, in file order."""
    return [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in table]


def parquet_table(frame: pd.DataFrame, metadata_json: str) -> pa.Table:
    """``frame`` as Arrow with ``metadata_json`` under ``METADATA_KEY``."""
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    return arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: metadata_json.encode()})


def check_writable(path: Path) -> None:
    """Refuse a path ``save_curriculum`` cannot write: another extension, a missing folder."""
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise CurriculumError(f"cannot write {str(path)!r}: a curriculum file ends in .parquet or .csv")
    if not path.parent.is_dir():
        raise CurriculumError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")


def save_curriculum(curriculum: Curriculum, path: str | os.PathLike[str]) -> Path:
    """Write Parquet (metadata in the schema) or CSV + ``FILE.csv.json``; atomic (the CSV
    is written, then the side-car moved into place, then the CSV)."""
    path = Path(path)
    check_writable(path)
    frame = curriculum.table[file_columns(curriculum.table)].copy()
    frame["sample_id"] = frame["sample_id"].astype(np.int64)
    frame["weight"] = frame["weight"].astype(np.float64)
    if path.suffix.lower() == ".parquet":
        arrow = parquet_table(frame, json.dumps(curriculum.metadata, sort_keys=True, default=str))
        write_atomic(path, lambda tmp: pq.write_table(arrow, tmp))
    else:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.17g")
            write_text_atomic(sidecar_paths(path)[0], json_text(curriculum.metadata) + "\n")
    return path


def curriculum_to_bytes(curriculum: Curriculum, suffix: str = ".parquet") -> bytes:
    """The file's bytes (for a download button); CSV carries no side-car here."""
    if suffix == ".parquet":
        frame = curriculum.table[file_columns(curriculum.table)]
        sink = io.BytesIO()
        pq.write_table(parquet_table(frame, json.dumps(curriculum.metadata, default=str)), sink)
        return sink.getvalue()
    return curriculum.table.to_csv(index=False, float_format="%.17g").encode()


# -- reading and validation ---------------------------------------------------------------


def _fail(path: Path, message: str) -> CurriculumError:
    return CurriculumError(f"curriculum file {str(path)!r}: {message}")


def _read_file(path: Path) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise _fail(path, f"unknown extension {suffix or '(none)'!r}; expected .parquet or .csv")
    if not path.is_file():
        raise _fail(path, "does not exist")
    metadata = None
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            if raw is not None:
                metadata = json.loads(raw)
            frame = table.to_pandas()
        else:
            frame = pd.read_csv(path)
            for side in sidecar_paths(path):
                if side.is_file():
                    metadata = json.loads(side.read_text())
                    break
    except json.JSONDecodeError as error:
        raise _fail(path, f"metadata is not valid JSON ({error})") from None
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _fail(path, f"cannot be read as {suffix[1:]} ({error})") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise _fail(path, "metadata must be a JSON object")
    return frame, metadata


def validate_table(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Columns, types and values of a curriculum table; returns it with clean dtypes."""
    columns = list(frame.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise _fail(path, f"missing column {', '.join(missing)} (expected sample_id, weight[, start_epoch, stage, label]; got {', '.join(map(str, columns)) or 'none'})")
    extra = [c for c in columns if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    if extra:
        raise _fail(path, f"unexpected column {', '.join(map(str, extra))} (allowed: sample_id, weight, start_epoch, stage, label)")
    if len(frame) == 0:
        raise _fail(path, "has no rows")
    clean = pd.DataFrame()
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(path, f"column {column} has a non-numeric value {frame[column].iloc[row]!r} (row {row + 1})")
        if column != "weight":
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise _fail(path, f"column {column} has an empty value (row {row + 1})")
            if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
                raise _fail(path, f"column {column} must hold integers")
            if column != "sample_id" and (values < 0).any():
                raise _fail(path, f"column {column} must be >= 0")
            if (values.abs() >= 2**62).any():  # int64 holds them; an epoch or class that large is a mistake
                row = int(np.flatnonzero((values.abs() >= 2**62).to_numpy())[0])
                raise _fail(path, f"column {column} has {frame[column].iloc[row]!r} (row {row + 1}); expected an "
                                  "integer below 2**62")
            clean[column] = values.astype(np.int64)
        else:
            clean[column] = values.astype(np.float64)
    weight = clean["weight"].to_numpy()
    ids = clean["sample_id"].to_numpy()
    for problem, mask in (("NaN or empty", np.isnan(weight)), ("infinite", np.isinf(weight)), ("negative", weight < 0)):
        if mask.any():
            raise _fail(path, f"{int(mask.sum())} {problem} weight(s), first at sample_id {int(ids[mask][0])}; weights must be finite and >= 0")
    if not (weight > 0).any():
        raise _fail(path, "all weights are zero; nothing would be trained on")
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        shown = sorted(set(ids[duplicated].tolist()))[:5]
        raise _fail(path, f"duplicate sample_id {', '.join(map(str, shown))}")
    return clean.sort_values("sample_id", kind="stable").reset_index(drop=True)


def validate_metadata(metadata: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """The format version, and an online rule's name and parameters (through the registry)."""
    metadata = dict(metadata or {})
    version = metadata.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(path, f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(path, f"format_version {version} is newer than this trainmap reads ({FORMAT_VERSION}); upgrade trainmap")
    metadata["format_version"] = version
    sources = metadata.get("source_runs")
    if sources is not None and (not isinstance(sources, list) or not all(isinstance(s, str) for s in sources)):
        raise _fail(path, f"source_runs must be a list of run ids, got {sources!r}")
    params = metadata.get("params")
    if isinstance(params, dict) and params.get("group_weights") is not None:
        table = params["group_weights"]
        try:
            if not isinstance(table, dict):
                raise CurriculumError(f"group_weights must be an object {{name: weight}}, got {table!r}")
            metadata["params"] = {**params, "group_weights": check_group_weights(table)}
        except CurriculumError as error:
            raise _fail(path, str(error)) from None
    online = metadata.get("online")
    if online is not None:
        try:
            strategy = online_strategy(online)
        except CurriculumError as error:
            raise _fail(path, str(error)) from None
        try:
            params = check_online(strategy, online.get("params") or {})
        except CurriculumError as error:
            raise _fail(path, f"online rule {online['rule']}: {error}") from None
        metadata["online"] = {"rule": online["rule"], "params": params}
    return metadata


def check_labels(table: pd.DataFrame, num_classes: int | None, path: Path) -> None:
    """A ``label`` column needs a classification task (``num_classes`` not None) and each
    label in ``[0, num_classes)``; a table without one passes."""
    if "label" not in table:
        return
    if num_classes is None:
        raise _fail(path, "has a label column, but the task has no classes; relabelling needs a classification task")
    labels = table["label"].to_numpy()
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _fail(path, f"label {int(labels[first])} of sample_id {int(table['sample_id'].iloc[first])} is not a "
                          f"class of the task; expected an integer in [0, {num_classes})")


def load_curriculum(
    path: str | os.PathLike[str],
    *,
    task: str | None = None,
    sample_ids: np.ndarray | None = None,
    num_classes: int | None = None,
) -> Curriculum:
    """Read and validate a curriculum file.

    ``task``: refuse a file made for another task. ``sample_ids``: the dataset's ids;
    ids the dataset does not have are an error, dataset samples the file does not list
    are pruned (weight 0). ``num_classes``: check a ``label`` column's range (training
    also refuses a label column for a task without classes: ``check_labels``).
    """
    path = Path(path)
    frame, metadata = _read_file(path)
    table = validate_table(frame, path)
    metadata = validate_metadata(metadata, path)
    file_task = metadata.get("task")
    if task is not None and file_task not in (None, "", task):
        raise _fail(path, f"was built for task {file_task!r}, not {task!r}")
    if sample_ids is not None:
        known = np.isin(table["sample_id"].to_numpy(), np.asarray(sample_ids))
        if not known.all():
            unknown = table["sample_id"].to_numpy()[~known]
            raise _fail(
                path,
                f"{len(unknown)} sample_id(s) not in the dataset (it has {len(sample_ids)} samples), "
                f"e.g. {', '.join(map(str, unknown[:5].tolist()))}",
            )
    if num_classes is not None:
        check_labels(table, num_classes, path)
    return Curriculum(table, metadata)


# -- the store's copies ---------------------------------------------------------------------


def curricula_dir(store_root: str | os.PathLike[str]) -> Path:
    """``<store>/curricula``: where built curricula are kept beside the runs."""
    return Path(store_root) / "curricula"


def save_to_store(curriculum: Curriculum, store_root: str | os.PathLike[str], filename: str | None = None) -> Path:
    """Save a copy (Parquet) into ``<store>/curricula/`` and return its path."""
    folder = curricula_dir(store_root)
    folder.mkdir(parents=True, exist_ok=True)
    if filename is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        strategy = curriculum.strategy or "file"
        score = curriculum.metadata.get("score") or "none"
        filename = f"{stamp}-{strategy}-{score}.parquet"
    target = folder / Path(filename).name
    counter = 1
    while target.exists():
        target = target.with_name(f"{Path(filename).stem}-{counter}{target.suffix}")
        counter += 1
    return save_curriculum(curriculum, target)


def list_curricula(store_root: str | os.PathLike[str]) -> list[Path]:
    folder = curricula_dir(store_root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in FILE_SUFFIXES and not is_temporary(p))
