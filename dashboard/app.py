"""trainmap dashboard entry point (``streamlit run dashboard/app.py``): it only routes.

The pages live in ``dashboard/views/``; shared helpers in ``dashboard/common.py``, figure
builders in ``dashboard/charts.py``. The store comes from ``$TRAINMAP_STORE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run dashboard/app.py` from a checkout
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import common  # noqa: E402

st.set_page_config(page_title="trainmap", page_icon=":material/scatter_plot:", layout="wide")

pages = [
    st.Page(common.PAGE_RUNS, title="Runs", icon=":material/table_rows:", default=True),
    st.Page(common.PAGE_RUN, title="Run", icon=":material/scatter_plot:", url_path="run"),
    st.Page(common.PAGE_COMPARE, title="Compare", icon=":material/compare_arrows:", url_path="compare"),
]
if (HERE / common.PAGE_CURRICULUM).exists():
    pages.append(st.Page(common.PAGE_CURRICULUM, title="Curriculum", icon=":material/tune:",
                         url_path="curriculum"))

page = st.navigation(pages)
with common.friendly_errors(f"the {page.title} page"):
    page.run()
