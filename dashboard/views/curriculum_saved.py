"""Curriculum page, a saved curriculum as the start: a file of the store's ``curricula/``
(saved from the data map's selection, from this page, or by ``trainmap curriculum``),
previewed on its source run and launched as a rerun of that run like a built one."""

from __future__ import annotations

import streamlit as st

from dashboard import data, data_curriculum, formatting, widgets

#: ``?curriculum=FILE`` opens the page on this saved file (the data map's link does)
FILE_KEY = "curriculum"


def choose_saved(root: str, run_ids: list[str], names: dict[str, str]) -> tuple[data.Curriculum, list[str], str] | None:
    """The chosen saved curriculum, its source run(s) in this store and its file name, or
    None (said why)."""
    files = data_curriculum.saved_curricula(root)
    if not files:
        st.info("No saved curricula in this store yet: select samples on a run's data map and press "
                "*Save curriculum*, or build one here from scores and press *Save to the store's curricula/*.")
        return None
    widgets.url_synced_choice(FILE_KEY, files, files[0])
    name = st.selectbox("Saved curriculum (newest first)", files, key=FILE_KEY)
    widgets.write_url(FILE_KEY, name)
    try:
        curriculum = data_curriculum.load_saved(root, name)
    except (data_curriculum.CurriculumError, OSError) as error:
        st.error(f"Cannot read curriculum {formatting.md_text(name)}: {formatting.md_text(str(error))}")
        return None
    sources = [run for run in (curriculum.metadata.get("source_runs") or []) if run in run_ids]
    if not sources:
        wanted = ", ".join(map(str, curriculum.metadata.get("source_runs") or [])) or "none recorded"
        st.warning(f"Curriculum {formatting.md_text(name)} was built from run(s) {formatting.md_text(wanted)}, "
                   "which this store does not hold as finished runs: a rerun needs its parent here.")
        return None
    facts = curriculum.summary()
    params = curriculum.metadata.get("params") or {}
    st.caption(f"Strategy **{formatting.md_text(str(curriculum.strategy or 'file'))}** "
               f"{formatting.md_text(str(params)) if params else ''} from "
               + ", ".join(f"{formatting.md_text(str(names.get(run, run)))} ({run})" for run in sources)
               + f": {facts['kept']:,} of {facts['samples']:,} samples kept. The rerun repeats the settings of "
               f"{formatting.md_text(str(names.get(sources[0], sources[0])))}.")
    return curriculum, sources, name
