"""Curriculum page, outcome: a finished rerun beside its parent, with a verdict (every
metric's difference set against the spread of the parent's sibling seeds), curves, per
class, what happened to the pruned and down-weighted samples, and an offer to rerun the
curriculum on the parent's other seeds."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from dashboard import charts, data, data_verdict, formatting

#: ``queue_seed_reruns(root, parent_run_ids, curriculum_path) -> job ids``: queues one rerun
#: of the curriculum per parent run (``dashboard.views.curriculum_jobs.queue_seed_reruns``,
#: passed in by the caller, which imports that module).
QueueSeedReruns = Callable[[str, list[str], str], list[str]]


def _headline(table, metric_name: str) -> dict:
    return table.set_index("metric").loc[metric_name].to_dict() | {"metric": metric_name}


def show_verdict(root: str, parent_id: str, rerun_id: str) -> data_verdict.RerunVerdict:
    """The verdict: one sentence on the headline metric, one over seeds where the curriculum
    was rerun on several, and the table of every metric (parent, rerun, difference, the
    parent's seeds' spread)."""
    verdict = data_verdict.rerun_verdict(root, parent_id, rerun_id)
    headline = data_verdict.METRIC_BY_NAME[data_verdict.HEADLINE_METRIC]
    multiplier = data_verdict.NOISE_MULTIPLIER
    st.markdown("**Verdict.** " + formatting.md_text(formatting.verdict_sentence(
        _headline(verdict.table, headline.name), headline, multiplier)))
    if verdict.paired is not None:
        st.markdown("**Over seeds.** " + formatting.md_text(formatting.paired_sentence(
            _headline(verdict.paired, headline.name), headline, multiplier)))
    st.dataframe(formatting.verdict_frame(verdict.table, data_verdict.METRICS), hide_index=True, width="stretch")
    names = verdict.names
    seed_names = ", ".join(names[run_id] for run_id in verdict.seed_run_ids)
    st.caption(
        "Difference: rerun − parent. Accuracies in %, their differences and spreads in percentage points (pp). "
        + (f"Seeds: the parent and its sibling seeds ({formatting.md_text(seed_names)}), finished runs with the "
           "parent's task, model, epochs, label noise and noise seed, learning rate, batch size, weight decay, "
           "processes and curriculum, and another seed; std with ddof=1."
           if len(verdict.seed_run_ids) > 1 else
           "The parent has no sibling seeds in the store (finished runs with its settings and another seed)."))
    if verdict.paired is not None:
        pairs = ", ".join(f"{names[seed]} → {names[other]}" for seed, other in verdict.seed_reruns.items())
        st.markdown(f"**Reruns vs parents over {len(verdict.seed_reruns)} seeds (paired: "
                    f"{formatting.md_text(pairs)})**")
        st.dataframe(formatting.paired_frame(verdict.paired, data_verdict.METRICS), hide_index=True, width="stretch")
    return verdict


def show_outcome(root: str, parent_id: str, rerun_id: str, curriculum: data.Curriculum | None, key: str,
                 queue_seed_reruns: QueueSeedReruns | None = None) -> None:
    st.subheader("Outcome: rerun vs parent")
    verdict = show_verdict(root, parent_id, rerun_id)
    names = verdict.names
    labels = {parent_id: f"parent · {names[parent_id]}", rerun_id: f"rerun · {names[rerun_id]}"}
    versions = {run_id: data.run_version(root, run_id) for run_id in (parent_id, rerun_id)}
    curves = data.stacked_epoch_metrics(root, versions)
    left, right = st.columns(2)
    left.plotly_chart(charts.compare_epochs_figure(curves, "val_accuracy", labels), key=f"{key}_acc")
    right.plotly_chart(charts.compare_epochs_figure(curves, "val_loss", labels), key=f"{key}_loss")
    if verdict.class_table is not None:
        st.markdown("**Validation accuracy per class (last epoch)**")
        st.dataframe(formatting.class_verdict_frame(verdict.class_table), hide_index=True, width="stretch")
    else:
        st.caption("No per-class validation accuracy recorded for these runs.")
    _offer_seed_reruns(root, rerun_id, verdict, key, queue_seed_reruns)
    if curriculum is not None:
        parent = data.sample_summary(root, (parent_id,), (versions[parent_id],))
        rerun = data.sample_summary(root, (rerun_id,), (versions[rerun_id],))
        fate = data.sample_fate_table(parent, rerun, curriculum)
        st.markdown("**What happened to the pruned and down-weighted samples** (mean confidence = p_true, "
                    "correctness and mean loss, parent vs rerun, where recorded; pruned samples are never "
                    "presented in the rerun)")
        st.dataframe(fate, hide_index=True)


def _offer_seed_reruns(root: str, rerun_id: str, verdict: data_verdict.RerunVerdict, key: str,
                       queue_seed_reruns: QueueSeedReruns | None) -> None:
    """A button that queues this curriculum on the parent's seeds that have no rerun of it yet."""
    if len(verdict.seed_run_ids) < 2:
        st.caption("To tell this difference from seed noise, train the parent's settings with another seed "
                   "(`trainmap train ... --seed 1`); this page then offers to rerun the curriculum on it.")
        return
    missing = list(verdict.seeds_without_rerun)
    if not missing:
        st.caption(f"This curriculum has a rerun on each of the parent's {len(verdict.seed_run_ids)} seeds.")
        return
    path = data_verdict.rerun_curriculum_path(root, rerun_id)
    label = (f"Rerun this curriculum on the parent's other seeds ({len(missing)}: "
             + ", ".join(verdict.names[run_id] for run_id in missing) + ")")
    reason = None
    if queue_seed_reruns is None:
        reason = "Not available here yet: queuing reruns on several seeds needs the rerun jobs queue."
    elif path is None:
        reason = "The rerun's curriculum file is not in this store any more, so it cannot be rerun."
    state_key = f"{key}_seed_reruns"
    st.button(label, key=f"{key}_seed_button", disabled=reason is not None, on_click=_queue,
              args=(root, missing, str(path), queue_seed_reruns, state_key))
    if reason:
        st.caption(reason)
    queued = st.session_state.get(state_key)
    if queued is not None:
        succeeded, message = queued
        (st.success if succeeded else st.error)(formatting.md_text(message))


def _queue(root: str, parent_ids: list[str], curriculum_path: str, queue_seed_reruns: QueueSeedReruns,
           state_key: str) -> None:
    try:
        jobs = queue_seed_reruns(root, parent_ids, curriculum_path)
    except (data.StoreError, ValueError, OSError) as error:
        st.session_state[state_key] = (False, f"Cannot queue the seed reruns: {error}")
        return
    st.session_state[state_key] = (True, f"Queued {len(jobs)} rerun job{'' if len(jobs) == 1 else 's'}: "
                                         + ", ".join(jobs))
