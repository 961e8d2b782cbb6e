"""The strategies: each one's name, builder, parameters and defaults, in this one place.

``STRATEGIES`` (name -> ``Strategy``) and ``PARAMS`` (name -> ``Param``) are what
``trainmap curriculum --help``, the dashboard and ``build_curriculum`` read. An online
rule is the strategy of the same name: its parameters and defaults are the strategy's
(``rule_params``), read by ``training.curriculum_run`` while training and checked here
when a file is loaded (``check_online``). Nothing else holds a default or checks a
strategy name. The builders themselves take every parameter explicitly.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from store.curriculum.errors import CurriculumError
from store.curriculum.groups import TABLE_FORMS, by_group_weights, parse_group_weights
from store.curriculum.online import SOW_FUNCTIONS, check_infobatch, check_sow, online_only
from store.curriculum.pace import PACINGS, anti_curriculum, check_pacing, easy_to_hard, self_paced
from store.curriculum.prune import keep_easy, keep_hard, keep_offset, keep_random, keep_stratified
from store.curriculum.relabel import relabel_noise
from store.curriculum.reweight import (
    CARTOGRAPHY,
    SOFT_NEEDS_FRACTION,
    check_floor,
    class_balance,
    downweight_noise_hard,
    downweight_noise_soft,
    upweight_hard,
)
from store.scores import SCORES

# -- the defaults --------------------------------------------------------------------------

PRUNE_DEFAULTS: dict[str, Any] = {"keep": 0.5, "class_floor": None}
PACING_DEFAULTS: dict[str, Any] = {"pacing": "linear", "r0": 0.2, "duration": 10, "stages": 4, "power": 2.0}
NOISE_DEFAULTS: dict[str, Any] = {"fraction": None, "threshold": None, "mode": "hard", "floor": 0.0, "temperature": 0.05}
#: downweight-noise by a score given neither fraction nor threshold: the hardest fraction
NOISE_FRACTION = 0.1
RELABEL_DEFAULTS: dict[str, Any] = {"fraction": None, "threshold": None, "min_confidence": 0.0}
INFOBATCH_DEFAULTS: dict[str, Any] = {"prune_ratio": 0.5, "delta": 0.875}
LOSS_REWEIGHT_DEFAULTS: dict[str, Any] = {"g": "linear-upper", "delta": 1.0, "tau": 1.0}
#: no table: every sample weighs default_weight (``trainmap curriculum`` asks for a table)
GROUP_WEIGHTS_DEFAULTS: dict[str, Any] = {"group_weights": None, "default_weight": 1.0}


# -- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    #: float, int, a tuple of choices, or dict (a table: group_weights)
    kind: type | tuple[str, ...]
    help: str
    #: how the command line shows the value (default: the kind's name)
    metavar: str | None = None


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("keep", float, "fraction of samples kept, in (0, 1]"),
        Param("class_floor", float, "prune: every class keeps at least floor(class_floor * keep * its size) "
              "samples, the total unchanged; 1 = class-stratified, 0 or unset = no floor"),
        Param("skip", float, "offset: fraction of the easiest samples skipped first, in [0, 1)"),
        Param("bins", int, "stratified: number of equal-width score bins"),
        Param("alpha", float, "upweight-hard: weight = 1 + alpha * hardness percentile, normalised to mean 1"),
        Param("fraction", float, "downweight-noise, relabel: fraction of samples suspected (the hardest by the score)"),
        Param("threshold", float, "downweight-noise, relabel: suspected when the score is at or beyond this "
              "value (e.g. aum 0)"),
        Param("mode", ("hard", "soft"), "downweight-noise: hard (suspected get --floor) or soft (logistic in the percentile)"),
        Param("floor", float, "downweight-noise: weight given to suspected samples (hard mode; 0 = prune)"),
        Param("min_confidence", float, "relabel: relabel only where the suggested label's confidence (share of "
              "presentations predicting it) is at least this, in [0, 1]"),
        Param("temperature", float, "downweight-noise soft mode: width of the logistic in percentile units"),
        Param("pacing", PACINGS, "pacing function"),
        Param("r0", float, "pacing: fraction of data available at epoch 0, in (0, 1]"),
        Param("duration", int, "pacing: epoch T by which all data is available"),
        Param("stages", int, "step pacing: number of steps ('baby steps')"),
        Param("power", float, "root pacing: p of the root-p function"),
        Param("prune_ratio", float, "infobatch: probability r of dropping a below-mean-loss sample, in [0, 1)"),
        Param("delta", float, "infobatch: fraction of training before full data "
              f"({INFOBATCH_DEFAULTS['delta']}); loss-reweight: bound of the normalised loss"),
        Param("tau", float, "loss-reweight: softmax temperature"),
        Param("g", SOW_FUNCTIONS, "loss-reweight: g function"),
        Param("group_weights", dict, f"group-weights: a weight per group, {TABLE_FORMS}",
              metavar="NAME=WEIGHT,...|FILE"),
        Param("default_weight", float, "group-weights: weight of samples whose group the table does not name, "
              f"or that have no group ({GROUP_WEIGHTS_DEFAULTS['default_weight']:g})"),
    )
}


def coerce_param(name: str, value: Any) -> Any:
    """``value`` as parameter ``name``'s kind (``None`` stays ``None``), or an error naming it."""
    spec = PARAMS[name]
    if value is None:
        return None
    if spec.kind is dict:
        return parse_group_weights(value)
    if isinstance(spec.kind, tuple):
        if value not in spec.kind:
            raise CurriculumError(f"{name} must be one of {', '.join(spec.kind)}, got {value!r}")
        return value
    try:
        if spec.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    except (TypeError, ValueError):
        raise CurriculumError(f"{name} must be a finite {spec.kind.__name__}, got {value!r}") from None


def keyword_arguments(function: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that ``function`` names as parameters."""
    names = inspect.signature(function).parameters
    return {key: value for key, value in values.items() if key in names}


# -- strategies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # prune / reweight / pace / online
    description: str
    builder: Callable[..., pd.DataFrame]
    defaults: dict[str, Any]
    needs_score: bool = True
    online_rule: str | None = None
    #: checks the rule's parameters when a file is loaded (called with those it names)
    online_check: Callable[..., None] | None = None
    #: scores accepted besides ``store.scores.SCORES``
    extra_scores: tuple[str, ...] = ()
    #: builders by the value of the ``mode`` parameter (``builder`` for any other)
    modes: dict[str, Callable[..., pd.DataFrame]] = field(default_factory=dict)
    #: completes parameters that depend on each other and on the score: the values recorded
    prepare: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None

    @property
    def scores(self) -> tuple[str, ...]:
        return (*SCORES, *self.extra_scores)

    def builder_for(self, values: Mapping[str, Any]) -> Callable[..., pd.DataFrame]:
        return self.modes.get(values.get("mode"), self.builder)


def noise_params(values: dict[str, Any], score: str | None) -> dict[str, Any]:
    """downweight-noise: by a score with neither fraction nor threshold, the hardest
    ``NOISE_FRACTION``; hard mode records no temperature; soft mode uses neither floor nor
    threshold, and refuses a floor outside [0, 1] and any threshold."""
    values = dict(values)
    if score != CARTOGRAPHY and values["fraction"] is None and values["threshold"] is None:
        values["fraction"] = NOISE_FRACTION
    if values["mode"] == "hard":
        values.pop("temperature", None)
    else:
        check_floor(values["floor"])
        if values["threshold"] is not None:
            raise CurriculumError(SOFT_NEEDS_FRACTION)
    return values


def relabel_params(values: dict[str, Any], score: str | None) -> dict[str, Any]:
    """relabel: by a score with neither fraction nor threshold, the hardest ``NOISE_FRACTION``."""
    values = dict(values)
    if score != CARTOGRAPHY and values["fraction"] is None and values["threshold"] is None:
        values["fraction"] = NOISE_FRACTION
    return values


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("keep-easy", "prune", "keep the easiest fraction", keep_easy, {**PRUNE_DEFAULTS}),
        Strategy("keep-hard", "prune", "keep the hardest fraction (Data Diet)", keep_hard, {**PRUNE_DEFAULTS}),
        Strategy("random", "prune", "keep a random fraction (seeded)", keep_random, {**PRUNE_DEFAULTS},
                 needs_score=False),
        Strategy("offset", "prune", "skip the easiest, keep the next window (Data Diet offset)", keep_offset,
                 {**PRUNE_DEFAULTS, "skip": 0.1}),
        Strategy("stratified", "prune", "coverage-balanced over score bins (CCS)", keep_stratified,
                 {**PRUNE_DEFAULTS, "bins": 10}),
        Strategy("upweight-hard", "reweight", "up-weight hard samples", upweight_hard, {"alpha": 1.0}),
        Strategy("downweight-noise", "reweight", "down-weight suspected label noise (AUM, EL2N, loss, "
                 "forgetting, cartography)", downweight_noise_hard, {**NOISE_DEFAULTS},
                 extra_scores=(CARTOGRAPHY,), modes={"hard": downweight_noise_hard, "soft": downweight_noise_soft},
                 prepare=noise_params),
        Strategy("relabel", "relabel", "train suspected label noise on its suggested label (the class predicted "
                 "most often) instead of dropping it", relabel_noise, {**RELABEL_DEFAULTS},
                 extra_scores=(CARTOGRAPHY,), prepare=relabel_params),
        Strategy("class-balance", "reweight", "equal total weight per class", class_balance, {}, needs_score=False),
        Strategy("group-weights", "reweight", "a weight per group (domain, skill, source) from a table",
                 by_group_weights, {**GROUP_WEIGHTS_DEFAULTS}, needs_score=False),
        Strategy("easy-to-hard", "pace", "curriculum with a pacing function", easy_to_hard, {**PACING_DEFAULTS}),
        Strategy("anti-curriculum", "pace", "hardest first with a pacing function", anti_curriculum,
                 {**PACING_DEFAULTS}),
        Strategy("self-paced", "online", "online: lowest current losses first, threshold grown by pacing",
                 self_paced, {**PACING_DEFAULTS}, online_rule="self-paced", online_check=check_pacing),
        Strategy("infobatch", "online", "online: drop below-mean-loss samples with probability r",
                 online_only, {**INFOBATCH_DEFAULTS}, needs_score=False, online_rule="infobatch",
                 online_check=check_infobatch),
        Strategy("loss-reweight", "online", "online: per-batch softmax weights of normalised losses (Sow et al.)",
                 online_only, {**LOSS_REWEIGHT_DEFAULTS}, needs_score=False, online_rule="loss-reweight",
                 online_check=check_sow),
    )
}
#: online rule name -> its strategy
ONLINE: dict[str, Strategy] = {s.online_rule: s for s in STRATEGIES.values() if s.online_rule}
ONLINE_RULES = tuple(sorted(ONLINE))


def strategy_named(name: str) -> Strategy:
    """The strategy called ``name``; the one place an unknown name is refused."""
    if name not in STRATEGIES:
        raise CurriculumError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def strategy_values(strategy: Strategy, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``strategy``: the given ones (``None`` = not given) coerced, the
    others its defaults. A parameter it does not take is refused, so a typo never
    silently does nothing."""
    given = {key: value for key, value in params.items() if value is not None}
    unused = sorted(set(given) - set(strategy.defaults))
    if unused:
        raise CurriculumError(
            f"strategy {strategy.name!r} does not take {', '.join(unused)}; it takes "
            f"{', '.join(strategy.defaults) or 'no parameters'}"
        )
    return {key: coerce_param(key, given.get(key, default)) for key, default in strategy.defaults.items()}


def online_strategy(online: Any) -> Strategy:
    """The strategy of a file's ``online`` block (``{rule, params}``), or an error."""
    if not isinstance(online, dict) or online.get("rule") not in ONLINE:
        raise CurriculumError(f"unknown online rule {online!r}; expected one of {', '.join(ONLINE_RULES)}")
    return ONLINE[online["rule"]]


def rule_params(rule: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters online rule ``rule`` trains with: ``params`` (from the file) over
    the rule's defaults; other keys are ignored."""
    params = params or {}
    return {key: params.get(key, default) for key, default in ONLINE[rule].defaults.items()}


def check_online(strategy: Strategy, params: Mapping[str, Any]) -> dict[str, Any]:
    """A file's online ``params`` for ``strategy``, coerced; the rule's own parameters
    (defaults filled in) checked. Keys other rules take are kept, unknown keys refused."""
    if not isinstance(params, Mapping):
        raise CurriculumError(f"online params must be a table of NAME: VALUE, got a {type(params).__name__}")
    checked: dict[str, Any] = {}
    for key, value in params.items():
        if key not in PARAMS:
            raise CurriculumError(f"unknown parameter {key!r}")
        checked[key] = coerce_param(key, value)
    if strategy.online_rule is not None and strategy.online_check is not None:
        strategy.online_check(**keyword_arguments(strategy.online_check, rule_params(strategy.online_rule, checked)))
    return checked
