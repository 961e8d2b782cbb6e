"""The registry (``store/curriculum/registry.py``) is the one home of every strategy's
name, builder, parameters and defaults: the builders and online rules take every
parameter explicitly, and names are refused in one place."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from store.curriculum import (
    PARAMS,
    STRATEGIES,
    Curriculum,
    CurriculumError,
    available_count,
    build_curriculum,
    infobatch_plan,
    load_curriculum,
    normalise_losses,
    pacing_fraction,
    save_curriculum,
    sow_weights,
    validate_metadata,
)
from store.curriculum.registry import ONLINE_RULES, online_strategy, rule_params, strategy_named
from tests.store.curriculum_samples import make_summary


def test_bad_parameters_are_named():
    s = make_summary()
    with pytest.raises(CurriculumError, match="keep must be in"):
        build_curriculum(s, "keep-easy", "loss", keep=1.5)
    with pytest.raises(CurriculumError, match="does not take bins"):
        build_curriculum(s, "keep-easy", "loss", keep=0.5, bins=3)
    with pytest.raises(CurriculumError, match="unknown score"):
        build_curriculum(s, "keep-easy", "nope", keep=0.5)
    with pytest.raises(CurriculumError, match="unknown strategy"):
        build_curriculum(s, "keep-most", "loss")
    with pytest.raises(CurriculumError, match="skip \\+ keep"):
        build_curriculum(s, "offset", "loss", keep=0.6, skip=0.5)



def _builders(name: str) -> list:
    spec = STRATEGIES[name]
    return [spec.builder, *spec.modes.values()]


def _without_time(metadata: dict) -> dict:
    return {key: value for key, value in metadata.items() if key != "created_at"}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_building_without_parameters_is_building_with_the_registry_defaults(name):
    s = make_summary()
    if name == "relabel":  # relabel needs each sample's suggested label (store.views.relabel)
        s = s.assign(suggested_label=s["label"], suggested_confidence=1.0)
    spec = STRATEGIES[name]
    score = "loss" if spec.needs_score else None
    implicit = build_curriculum(s, name, score, task="mnist1d")
    explicit = build_curriculum(s, name, score, task="mnist1d", **spec.defaults)
    assert implicit.table.equals(explicit.table)
    assert _without_time(implicit.metadata) == _without_time(explicit.metadata)
    recorded = {key: value for key, value in spec.defaults.items() if value is not None}
    if name == "downweight-noise":  # by a score with neither fraction nor threshold: the hardest 0.1
        recorded = {"fraction": 0.1, "mode": "hard", "floor": 0.0}
    if name == "relabel":  # the same: the hardest 0.1
        recorded = {"fraction": 0.1, "min_confidence": 0.0}
    assert implicit.metadata["params"] == recorded
    if spec.online_rule:
        assert implicit.metadata["online"] == {"rule": name, "params": recorded}
        assert rule_params(name, {}) == spec.defaults


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_builders_hold_no_defaults_and_take_only_registered_parameters(name):
    spec = STRATEGIES[name]
    taken: set[str] = set()
    for builder in _builders(name):
        parameters = inspect.signature(builder).parameters
        defaults = [p for p in parameters.values() if p.default is not inspect.Parameter.empty]
        assert not defaults, f"{builder.__name__} holds defaults {defaults}: they belong in the registry"
        taken |= set(parameters) - {"summary", "score", "seed"}
    # every parameter a builder takes is the strategy's; every one of the strategy's is used
    # by a builder or, for an online rule, by the rule (mode picks the builder)
    assert taken <= set(spec.defaults)
    if spec.online_check is not None:
        taken |= set(inspect.signature(spec.online_check).parameters)
    assert set(spec.defaults) - {"mode"} == taken
    assert set(spec.defaults) <= set(PARAMS)


def test_online_rules_and_their_checks_hold_no_defaults():
    for function in (infobatch_plan, sow_weights, normalise_losses, pacing_fraction,
                     *(spec.online_check for spec in STRATEGIES.values() if spec.online_check)):
        parameters = inspect.signature(function).parameters
        assert not [p for p in parameters.values() if p.name in PARAMS and p.default is not inspect.Parameter.empty]
    assert ONLINE_RULES == ("infobatch", "loss-reweight", "self-paced")
    assert available_count(0, 10, **rule_params("self-paced", None)) == 2  # r0 0.2 of 10
    # a file's values win; keys of other rules are ignored
    assert rule_params("infobatch", {"delta": 0.5, "tau": 3.0}) == {**STRATEGIES["infobatch"].defaults, "delta": 0.5}


def test_unknown_names_are_refused_by_the_registry_alone(tmp_path):
    s = make_summary()
    with pytest.raises(CurriculumError) as from_registry:
        strategy_named("keep-most")
    with pytest.raises(CurriculumError) as from_build:
        build_curriculum(s, "keep-most", "loss")
    assert str(from_build.value) == str(from_registry.value)
    assert str(from_build.value) == ("unknown strategy 'keep-most'; expected one of " + ", ".join(STRATEGIES))
    # the file validator refuses an online rule that is no online strategy with the
    # registry's message, prefixed by the file
    path = Path(tmp_path / "f.parquet")
    for online in ({"rule": "keep-most"}, {"rule": "keep-easy"}, "infobatch"):
        with pytest.raises(CurriculumError) as from_registry:
            online_strategy(online)
        with pytest.raises(CurriculumError) as from_validator:
            validate_metadata({"online": online}, path)
        assert str(from_validator.value) == f"curriculum file {str(path)!r}: {from_registry.value}"
        c = build_curriculum(s, "keep-easy", "loss", keep=0.5)
        saved = save_curriculum(Curriculum(c.table, {**c.metadata, "online": online}), path)
        with pytest.raises(CurriculumError) as from_load:
            load_curriculum(saved)
        assert str(from_load.value) == str(from_validator.value)


def test_a_files_online_parameters_are_checked_with_the_registry_defaults(tmp_path):
    path = Path(tmp_path / "f.parquet")
    # delta alone is fine for loss-reweight (> 0), but not for infobatch ((0, 1]): each rule's own check
    assert validate_metadata({"online": {"rule": "loss-reweight", "params": {"delta": 2}}}, path)["online"] == {
        "rule": "loss-reweight", "params": {"delta": 2.0}}
    with pytest.raises(CurriculumError, match="online rule infobatch: delta must be in \\(0, 1\\], got 2.0"):
        validate_metadata({"online": {"rule": "infobatch", "params": {"delta": 2}}}, path)
    with pytest.raises(CurriculumError, match="online rule self-paced: stages must be a positive integer"):
        validate_metadata({"online": {"rule": "self-paced", "params": {"pacing": "step", "stages": 0}}}, path)
    with pytest.raises(CurriculumError, match="online rule infobatch: unknown parameter 'speed'"):
        validate_metadata({"online": {"rule": "infobatch", "params": {"speed": 2}}}, path)
