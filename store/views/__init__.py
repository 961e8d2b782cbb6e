"""DuckDB queries behind the dashboard: small, aggregated answers from big runs.

A run of 50,000 samples x 200 epochs has 10 M presentation rows, too many to load into
pandas for every view (benchmarks/results/dashboard.md). So every view here asks DuckDB
for what a chart shows and nothing more: binned histograms, region counts, a
deterministic random sample of at most ``max_points`` points for a scatter, bucketed
step curves, top-k tables.

- ``store.views.results``: the typed answers (``Sampled``, ``Histogram``, ``Agreement``)
- ``store.views.connection``: run versions, cursors with a run's summary, checked score SQL
- ``store.views.run``: one run at a glance (sample count, recorded scores, steps, data map)
- ``store.views.distributions``: score histograms, region and forgetting counts
- ``store.views.samples``: hardest samples, one sample's record, the sample-id range
- ``store.views.agreement``: two runs' agreement on a score
- ``store.views.density``: the data map and the agreement scatter of a big run as 2-D bins
  over every sample, and the samples of one box (bounded)
- ``store.views.curriculum_effects``: a curriculum's weights laid over a run's samples
- ``store.views.groups``: per-group loss curves and each group's spread of a score

This package re-exports the public names for outside users; code inside ``store/``
imports them from their modules.
"""

from __future__ import annotations

from store.views.agreement import score_agreement
from store.views.connection import run_version
from store.views.density import Density, agreement_density, agreement_region_points, map_density, map_region_points
from store.views.curriculum_effects import (
    CurriculumPreview,
    curriculum_preview,
    last_epoch_class_accuracy,
    start_epoch_counts,
    weight_groups,
    weight_map_points,
)
from store.views.distributions import forgetting_counts, region_counts, score_histogram, score_histograms
from store.views.groups import group_epoch_curves, group_loss_curves, group_score_boxes
from store.views.results import Agreement, Histogram, Sampled
from store.views.run import data_map, recorded_scores, sample_count, step_curves, summary_overview
from store.views.samples import hardest_samples, sample_id_range, sample_record

__all__ = [
    "Agreement",
    "CurriculumPreview",
    "Density",
    "Histogram",
    "Sampled",
    "agreement_density",
    "agreement_region_points",
    "curriculum_preview",
    "data_map",
    "forgetting_counts",
    "group_epoch_curves",
    "group_loss_curves",
    "group_score_boxes",
    "hardest_samples",
    "last_epoch_class_accuracy",
    "map_density",
    "map_region_points",
    "recorded_scores",
    "region_counts",
    "run_version",
    "sample_count",
    "sample_id_range",
    "sample_record",
    "score_agreement",
    "score_histogram",
    "score_histograms",
    "start_epoch_counts",
    "step_curves",
    "summary_overview",
    "weight_groups",
    "weight_map_points",
]
