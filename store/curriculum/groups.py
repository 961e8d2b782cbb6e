"""Group weights: a weight per group (a domain, a skill, a data source), turned into a
weight per sample through each sample's group in the source runs.

Data-mixing work reasons per domain: DoReMi (Xie et al. 2023) learns domain weights,
Skill-it (Chen et al. 2023) orders skills, and domain upsampling re-weights domains late in
training (Blakeney et al. 2024). Here the user gives the table and the rerun trains with it
as with any weighted curriculum: a sample's loss is multiplied by its group's weight, and a
group of weight 0 is never drawn.

The table is ``{group name: weight}``: given as ``NAME=WEIGHT,...``, a ``.json`` object, a
``.csv`` with columns ``group, weight``, or a mapping. A sample whose group the table does not
name, or that has no group, gets ``default_weight``. A name that is no group of the source
runs is refused (a typo never silently weights nothing). The table is kept in the curriculum
file's metadata (``params.group_weights``), so a file says which weights made it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.ranking import weight_frame

#: The table's file forms.
TABLE_SUFFIXES = (".csv", ".json")
TABLE_FORMS = "NAME=WEIGHT,... (e.g. docs=2,code=0.5), a .json object {name: weight}, or a .csv with columns group,weight"


def _weight(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise CurriculumError(f"group_weights: the weight of group {name!r} must be a finite number >= 0, got {value!r}")
    return number


def check_group_weights(table: Mapping[Any, Any]) -> dict[str, float]:
    """``table`` as ``{name: weight}``: names non-empty strings, weights finite and >= 0."""
    checked: dict[str, float] = {}
    for name, value in table.items():
        if not isinstance(name, str) or not name:
            raise CurriculumError(f"group_weights: group names must be non-empty strings, got {name!r}")
        checked[name] = _weight(name, value)
    return checked


def _inline(text: str) -> dict[str, float]:
    table: dict[str, Any] = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise CurriculumError(f"group_weights: cannot read {item.strip()!r}; expected {TABLE_FORMS}")
        if name in table:
            raise CurriculumError(f"group_weights: group {name!r} is given twice")
        table[name] = value.strip()
    return table


def _file(path: Path) -> Mapping[Any, Any]:
    if not path.is_file():
        raise CurriculumError(f"group_weights: no file {str(path)!r}; expected {TABLE_FORMS}")
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise CurriculumError(f"group_weights: {str(path)!r} must hold a JSON object {{name: weight}}")
            return table
        frame = pd.read_csv(path, dtype={"group": str}, keep_default_na=False)
    except (OSError, ValueError) as error:
        if isinstance(error, CurriculumError):
            raise
        raise CurriculumError(f"group_weights: cannot read {str(path)!r} ({error})") from None
    if list(frame.columns) != ["group", "weight"]:
        raise CurriculumError(f"group_weights: {str(path)!r} must have the columns group,weight; "
                              f"got {','.join(map(str, frame.columns))}")
    twice = frame["group"][frame["group"].duplicated()]
    if len(twice):
        raise CurriculumError(f"group_weights: group {twice.iloc[0]!r} is given twice in {str(path)!r}")
    return dict(zip(frame["group"], frame["weight"]))


def parse_group_weights(value: Any) -> dict[str, float]:
    """The table from any of its forms (see the module docstring), checked."""
    if isinstance(value, Mapping):
        return check_group_weights(value)
    if isinstance(value, (str, Path)):
        text = str(value).strip()
        if Path(text).suffix.lower() in TABLE_SUFFIXES and "=" not in text:
            return check_group_weights(_file(Path(text)))
        if text:
            return check_group_weights(_inline(text))
    raise CurriculumError(f"group_weights: expected {TABLE_FORMS}; got {value!r}")


def by_group_weights(summary: pd.DataFrame, group_weights: dict[str, float] | None,
                     default_weight: float) -> pd.DataFrame:
    """weight = ``group_weights[group]`` for a sample whose group (the summary's ``group``
    column, ``store.groups.with_group_names``) the table names, ``default_weight`` otherwise.
    ``None`` or an empty table weights every sample ``default_weight``."""
    table = check_group_weights(group_weights or {})
    default_weight = _weight("(not named)", default_weight)
    if "group" not in summary:
        if table:
            raise CurriculumError(
                f"group_weights names {', '.join(map(repr, table))}, but the source runs recorded no groups "
                "(a batch gives each sample's group under the name 'group')")
        return weight_frame(summary, np.full(len(summary), default_weight))
    groups = summary["group"]
    known = sorted({str(name) for name in groups.dropna()})
    unknown = [name for name in table if name not in known]
    if unknown:
        raise CurriculumError(
            f"group_weights: {', '.join(map(repr, unknown))} {'is no group' if len(unknown) == 1 else 'are no groups'} "
            f"of the source runs; their groups: {', '.join(known) or 'none'}")
    weight = groups.map(table).astype(float).fillna(default_weight).to_numpy()
    return weight_frame(summary, weight)
