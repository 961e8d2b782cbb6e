"""Curricula: built from per-sample scores, exported as files, validated on load.

Torch-free (the dashboard imports it). One module per concern:

* ``prune``, ``reweight``, ``pace``: the builders, pure deterministic functions of the
  per-sample summary (``store.sample_summary``) that return one row per sample
  ``sample_id, weight`` (``weight`` 0 = pruned) and, for pacing, ``start_epoch, stage``;
  ``ranking`` holds what they share;
* ``relabel``: the relabel strategy (suspected noise trains on its suggested label);
  ``class_floor``: the per-class floor of the prune strategies; ``unscored``: samples the
  source runs never presented (kept or dropped, never ranked); ``effects``: what a
  curriculum does per class, Kish's effective sample count;
* ``groups``: the group-weights table (a weight per group name) and its builder;
* ``online``: the rules ``training.curriculum_run`` applies while a run trains
  (InfoBatch, loss-based reweighting); they are stored as a rule + parameters;
* ``registry``: every strategy's name, builder, parameters and defaults, in one place;
  ``build``: ``build_curriculum``, a strategy applied to a summary;
* ``format``: the file (Parquet, or CSV + JSON side-car), its validation, and the
  ``<store>/curricula/`` copies;
* ``outcome``: a rerun beside its parent (class accuracy, each sample's fate).

Definitions (DESIGN.md): InfoBatch (Qin et al. 2024), loss-based online reweighting
(Sow et al. 2025), pacing functions (Hacohen & Weinshall 2019), self-paced learning
(Kumar et al. 2010), Data Diet offset window (Paul et al. 2021), coverage-centric
stratified pruning (Zheng et al. 2023), AUM (Pleiss et al. 2020), cartography regions
(Swayamdipta et al. 2020).

This module only re-exports, for code outside the package.
"""

from store.curriculum.build import build_curriculum
from store.curriculum.class_floor import floored_selection
from store.curriculum.effects import class_effect, effective_sample_count, relabel_counts
from store.curriculum.errors import CurriculumError
from store.curriculum.format import (
    FILE_SUFFIXES,
    FORMAT_VERSION,
    check_labels,
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    Curriculum,
    check_writable,
    curricula_dir,
    curriculum_to_bytes,
    list_curricula,
    load_curriculum,
    save_curriculum,
    save_to_store,
    sidecar_paths,
    validate_metadata,
    validate_table,
)
from store.curriculum.groups import by_group_weights, check_group_weights, parse_group_weights
from store.curriculum.online import SOW_FUNCTIONS, infobatch_plan, normalise_losses, sow_g, sow_weights
from store.curriculum.outcome import class_accuracy, fate_table, sample_fate
from store.curriculum.pace import PACINGS, anti_curriculum, available_count, easy_to_hard, pacing_fraction, self_paced
from store.curriculum.prune import keep_easy, keep_hard, keep_offset, keep_random, keep_stratified
from store.curriculum.registry import ONLINE_RULES, PARAMS, STRATEGIES, Param, Strategy
from store.curriculum.relabel import combine_suggestions, relabel_noise, with_suggestions
from store.curriculum.reweight import (
    CARTOGRAPHY,
    class_balance,
    downweight_noise_hard,
    downweight_noise_soft,
    suspected_noise,
    upweight_hard,
)
from store.curriculum.unscored import UNSCORED_CHOICES, unscored_mask

__all__ = [
    "CARTOGRAPHY",
    "FILE_SUFFIXES",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "ONLINE_RULES",
    "OPTIONAL_COLUMNS",
    "PACINGS",
    "PARAMS",
    "REQUIRED_COLUMNS",
    "SOW_FUNCTIONS",
    "STRATEGIES",
    "UNSCORED_CHOICES",
    "Curriculum",
    "CurriculumError",
    "Param",
    "Strategy",
    "anti_curriculum",
    "check_labels",
    "check_writable",
    "class_effect",
    "combine_suggestions",
    "effective_sample_count",
    "floored_selection",
    "relabel_counts",
    "relabel_noise",
    "unscored_mask",
    "with_suggestions",
    "available_count",
    "build_curriculum",
    "by_group_weights",
    "check_group_weights",
    "class_accuracy",
    "class_balance",
    "curricula_dir",
    "curriculum_to_bytes",
    "downweight_noise_hard",
    "downweight_noise_soft",
    "easy_to_hard",
    "fate_table",
    "infobatch_plan",
    "keep_easy",
    "keep_hard",
    "keep_offset",
    "keep_random",
    "keep_stratified",
    "list_curricula",
    "load_curriculum",
    "normalise_losses",
    "pacing_fraction",
    "parse_group_weights",
    "sample_fate",
    "save_curriculum",
    "save_to_store",
    "self_paced",
    "sidecar_paths",
    "sow_g",
    "sow_weights",
    "suspected_noise",
    "upweight_hard",
    "validate_metadata",
    "validate_table",
]
