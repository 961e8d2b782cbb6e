"""Compare page: two or more runs overlaid; per-sample agreement of a score between runs.

The runs live in the URL (``?runs=A&runs=B``). Agreement is computed in DuckDB:
Spearman rank correlation, the top-k overlap and a sampled scatter of score A vs score B; past
``data_density.density_threshold()`` common samples, a density of all of them instead, with a
box dragged on it drilled into (at most ``data_density.REGION_MAX_POINTS`` points).
"""

from __future__ import annotations

import itertools

import pandas as pd
import streamlit as st

from dashboard import charts, charts_map, data, data_density, formatting, widgets
from dashboard.views import curriculum_outcome

#: The agreement density's chart and the chart of the box drilled into.
DENSITY_KEY = "agreement_density"
REGION_KEY = "agreement_region"

root, runs = widgets.listing_page("Compare runs")

run_ids = list(runs.sort_values("created_at", ascending=False, kind="stable")["run_id"])
names = dict(zip(runs["run_id"], runs["name"]))
labels = {run_id: f"{names.get(run_id) or run_id} ({run_id})" for run_id in run_ids}

widgets.url_synced_multichoice("runs", run_ids, [])
selected = st.multiselect("Runs to compare", run_ids, key="runs", format_func=lambda r: labels[r],
                          placeholder="pick two or more runs")
widgets.write_url("runs", selected)
if len(selected) < 2:
    st.info("Pick two or more runs above (or tick them on the Runs page and press *Compare runs*).")
    st.stop()

statuses = runs.set_index("run_id").loc[selected, "status"]
short = {run_id: names.get(run_id) or run_id for run_id in selected}
# Runs of one name (two seeds named alike, two generated runs) are told apart by their ids:
# equal labels would make the Run A / Run B pickers resolve to the same run.
repeated = {name for name in short.values() if list(short.values()).count(name) > 1}
short = {run_id: f"{name} ({run_id})" if name in repeated else name for run_id, name in short.items()}


@st.fragment(run_every=widgets.LIVE_REFRESH_SECONDS if (statuses == "running").any() else None)
def compare_body() -> None:
    with widgets.friendly_errors("the Compare page"):  # inside the fragment: see views/run.py
        compare_content()


def compare_content() -> None:
    versions = {run_id: data.run_version(root, run_id) for run_id in selected}
    infos = {run_id: data.run_info(root, run_id, versions[run_id]) for run_id in selected}
    for run_id, info in infos.items():
        if info.get("status") == "running":
            st.badge(f"{formatting.md_text(short[run_id])}: {formatting.status_label('running', info.get('epochs_done'), info.get('max_epochs'))}",
                     icon=":material/autorenew:", color="green")
        elif info.get("status") in ("failed", "interrupted"):
            st.warning(f"Run {formatting.md_text(short[run_id])} {info.get('status')}: "
                       f"{formatting.md_text(info.get('error') or 'no error recorded')}")

    table = formatting.compare_table(infos, short, names)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "label noise": st.column_config.NumberColumn(format="percent"),
        "best val acc": st.column_config.NumberColumn(format="percent"),
        "final val acc": st.column_config.NumberColumn(format="percent"),
    })

    for run_id, info in infos.items():  # a rerun picked with its parent: the verdict
        parent_id = info.get("parent_run_id")
        if parent_id in infos and info.get("status") == "finished" and infos[parent_id].get("status") == "finished":
            st.subheader(f"Verdict: {formatting.md_text(short[run_id])} vs its parent "
                         f"{formatting.md_text(short[parent_id])}")
            curriculum_outcome.show_verdict(root, parent_id, run_id)

    curves = data.stacked_epoch_metrics(root, versions)
    st.subheader("Curves")
    if curves.empty:
        st.info("None of these runs has completed an epoch yet.")
    else:
        cols = st.columns(2)
        for index, column in enumerate(("val_accuracy", "val_loss", "train_accuracy", "train_loss")):
            cols[index % 2].plotly_chart(charts.compare_epochs_figure(curves, column, short),
                                         key=f"compare_{column}")

    st.subheader("Per-sample agreement")
    tasks = {info.get("task") for info in infos.values()}
    if len(tasks) > 1:
        st.warning("These runs are of different tasks (" + ", ".join(sorted(map(str, tasks)))
                   + "): their samples differ, so per-sample scores cannot be compared.")
        return
    recorded = [set(data.recorded_scores(root, run_id, versions[run_id])) for run_id in selected]
    common_scores = [name for name in data.SCORES if all(name in scores for scores in recorded)]
    if not common_scores:
        st.info("These runs share no recorded score yet (they need at least one completed epoch).")
        return
    kinds = {data.output_kind(info) for info in infos.values()}
    if len(kinds) > 1:
        st.caption("These runs recorded different outputs (" + ", ".join(
            formatting.kind_label(kind) for kind in sorted(kinds)) + "): only the scores all of them have "
            "are offered.")
    controls = st.columns([2, 2, 2, 2])
    score = controls[0].selectbox("Score", common_scores, key="compare_score",
                                  index=common_scores.index("el2n") if "el2n" in common_scores else 0)
    run_a = controls[1].selectbox("Run A", selected, index=0, key="compare_a", format_func=short.get)
    run_b = controls[2].selectbox("Run B", selected, index=1, key="compare_b", format_func=short.get)
    top_percent = controls[3].slider("Top k (% hardest)", 1, 50, 10, key="compare_top")
    if run_a == run_b:
        st.info("Pick two different runs as A and B.")
        return
    agreement = data.score_agreement(root, run_a, versions[run_a], run_b, versions[run_b],
                                     score, top_percent / 100)
    cols = st.columns(3)
    cols[0].metric("Spearman rank correlation",
                   "–" if agreement.spearman is None else f"{agreement.spearman:.3f}")
    cols[1].metric(f"Top-{agreement.top_k:,} overlap", formatting.percent(agreement.top_k_overlap),
                   help=f"share of the {agreement.top_k:,} hardest samples by {score} in A that "
                        "are also among the hardest in B")
    cols[2].metric("Samples in both", f"{agreement.common_samples:,}")
    dense = agreement.common_samples > data_density.density_threshold()
    if dense:
        agreement_density(versions, score, run_a, run_b)
    else:
        st.plotly_chart(charts.agreement_figure(agreement.points.frame, score, short[run_a], short[run_b],
                                                agreement.points.total, agreement.points.method),
                        key="agreement_chart")
    st.caption(f"{data.SCORES[score].description}. Ranks follow the score registry's 'harder' direction"
               + ("; never-learned samples rank hardest." if data.SCORES[score].never_learned_hardest else ".")
               + (" " + charts.sampling_note(agreement.points.shown, agreement.points.total)
                  + ", sampled in DuckDB." if agreement.points.is_partial and not dense else ""))
    if data.SCORES[score].needs == "correct":
        # Forgetting, first-learned epoch and correctness of sequences rest on a threshold: say it.
        for run_id in (run_a, run_b):
            if data.output_kind(infos[run_id]) == "sequence":
                st.caption(f"{formatting.md_text(short[run_id])}: " + formatting.correct_definition(
                    "sequence", infos[run_id].get("sequence_correct_threshold")))

    if len(selected) > 2:
        rows = []
        for first, second in itertools.combinations(selected, 2):
            pair = data.score_agreement(root, first, versions[first], second, versions[second],
                                        score, top_percent / 100)
            rows.append({"run A": short[first], "run B": short[second], "spearman": pair.spearman,
                         f"top {top_percent}% overlap": pair.top_k_overlap})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def agreement_density(versions: dict[str, tuple], score: str, run_a: str, run_b: str) -> None:
    """The agreement of two big runs: every common sample binned; a box dragged on it drilled into."""
    density = data_density.agreement_density(root, run_a, versions[run_a], run_b, versions[run_b], score)
    options = ["samples"] + (["flipped-label share"] if density.bins["flipped"].any() else [])
    colour = st.radio("Colour the bins by", options, horizontal=True, key="compare_density_colour")
    pretty = score.replace("_", " ")
    figure = charts_map.density_figure(
        density.bins, density.x_bins, density.y_bins, density.x_range, density.y_range, colour,
        f"{pretty}: run A vs run B (density)", f"{pretty} — {short[run_a]}", f"{pretty} — {short[run_b]}",
        note=formatting.density_note(density.total, density.x_bins, density.y_bins), score_name=pretty)
    st.plotly_chart(figure, key=DENSITY_KEY, on_select="rerun", selection_mode=("box",))
    st.caption(formatting.density_caption(density.total, data_density.density_threshold(),
                                          density.x_bins * density.y_bins, data_density.REGION_MAX_POINTS)
)
    box = widgets.selected_box(DENSITY_KEY)
    if box is None:
        return
    points = data_density.agreement_region_points(root, run_a, versions[run_a], run_b, versions[run_b], score,
                                                  *box)
    if points.total == 0:
        st.info("No sample lies in this box.")
        return
    region = charts.agreement_figure(points.frame, score, short[run_a], short[run_b], points.total, points.method)
    charts_map.zoom_to(region, *box, title=f"{pretty}: A {box[0][0]:.3f}–{box[0][1]:.3f}, "
                                            f"B {box[1][0]:.3f}–{box[1][1]:.3f}")
    st.plotly_chart(region, key=REGION_KEY, on_select="rerun", selection_mode=("points",))
    st.caption(formatting.region_caption(points.shown, points.total, data_density.REGION_MAX_POINTS)
               + " Click a point to open that sample of run A.")
    sample_id = widgets.first_custom_id(widgets.selected_points(REGION_KEY))
    if sample_id is not None:
        st.page_link(widgets.PAGE_RUN, label=f"Open sample {sample_id} of {short[run_a]} on the Run page",
                     icon=":material/open_in_new:",
                     query_params={"run": run_a, "view": "Data map", "sample": str(sample_id)})


compare_body()
