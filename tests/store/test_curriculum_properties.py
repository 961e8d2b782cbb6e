"""Property-based: any table or side-car either loads as a valid curriculum or is refused with
CurriculumError, never another exception (store.curriculum.load_curriculum)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from store.curriculum import CurriculumError, load_curriculum
from store.curriculum.format import METADATA_KEY

NAMES = ["sample_id", "weight", "start_epoch", "stage", "extra", "Weight", ""]
VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
METADATA = st.one_of(
    st.none(),
    JSON_VALUES,
    st.fixed_dictionaries({}, optional={
        "format_version": JSON_VALUES, "strategy": JSON_VALUES, "task": JSON_VALUES, "score": JSON_VALUES,
        "params": JSON_VALUES, "online": JSON_VALUES, "source_runs": JSON_VALUES, "seed": JSON_VALUES,
    }),
)


@st.composite
def tables(draw):
    columns = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=5, unique=True))
    if draw(st.booleans()):  # mostly the right columns, so the value checks are reached too
        columns = list(dict.fromkeys(["sample_id", "weight", *columns]))
    rows = draw(st.integers(min_value=0, max_value=6))
    data = {}
    for name in columns:
        kind = draw(st.sampled_from(["int", "float", "any"]))
        if kind == "int":
            data[name] = draw(st.lists(st.integers(min_value=-5, max_value=2**40), min_size=rows, max_size=rows))
        elif kind == "float":
            data[name] = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=rows, max_size=rows))
        else:
            data[name] = draw(st.lists(VALUES, min_size=rows, max_size=rows))
    return pd.DataFrame(data, columns=columns)


@st.composite
def near_valid_tables(draw):
    """Valid tables, sometimes with one value broken: they reach the value checks and loading."""
    rows = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(st.integers(min_value=0, max_value=10**6), min_size=rows, max_size=rows, unique=True))
    weights = draw(st.lists(st.floats(min_value=0, max_value=5), min_size=rows, max_size=rows))
    frame = pd.DataFrame({"sample_id": ids, "weight": weights})
    if draw(st.booleans()):
        frame["start_epoch"] = draw(st.lists(st.integers(min_value=0, max_value=50), min_size=rows, max_size=rows))
    if draw(st.booleans()):
        column = draw(st.sampled_from(list(frame.columns)))
        frame[column] = frame[column].astype(object)
        frame.loc[draw(st.integers(min_value=0, max_value=rows - 1)), column] = draw(VALUES)
    return frame


def write(folder: Path, frame: pd.DataFrame, metadata, form: str) -> Path | None:
    """The table as a file of ``form``; None when pandas / Arrow cannot write it at all."""
    if form == "csv":
        path = folder / "c.csv"
        frame.to_csv(path, index=False)
        if metadata is not None:
            (folder / "c.csv.json").write_text(json.dumps(metadata))
        return path
    path = folder / "c.parquet"
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None  # mixed objects Arrow refuses to store: no such file can exist
    if metadata is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path)
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.one_of(tables(), near_valid_tables()), metadata=METADATA, form=st.sampled_from(["csv", "parquet"]))
def test_any_table_loads_valid_or_is_refused_with_a_curriculum_error(frame, metadata, form):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder), frame, metadata, form)
        if path is None:
            return
        try:
            curriculum = load_curriculum(path)
        except CurriculumError as error:
            assert str(error).startswith("curriculum file") and "\n" not in str(error).strip()
            event("refused")
            return
    event("loaded")
    table = curriculum.table
    ids = table["sample_id"].to_numpy()
    weights = table["weight"].to_numpy(dtype=float)
    assert len(table) > 0 and len(np.unique(ids)) == len(ids)
    assert np.issubdtype(ids.dtype, np.integer)
    assert all(math.isfinite(w) and w >= 0 for w in weights)
    if "start_epoch" in table:
        starts = table["start_epoch"].to_numpy()
        assert np.issubdtype(starts.dtype, np.integer) and (starts >= 0).all()
