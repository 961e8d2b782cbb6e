"""trainmap dashboard entry point (``streamlit run dashboard/app.py``): it only routes.

The pages live in ``dashboard/views/`` and only render: what the store holds comes through
``dashboard/data.py`` (the one module that imports ``store``), figures from the pure builders
in ``dashboard/charts.py``, shared Streamlit helpers from ``dashboard/widgets.py`` and value
formatting from ``dashboard/formatting.py``. The store comes from ``$TRAINMAP_STORE``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `streamlit run dashboard/app.py` from a checkout
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import widgets  # noqa: E402

# A local favicon: a Material icon as page_icon makes the browser fetch its SVG from
# fonts.gstatic.com, and the dashboard makes no request outside the machine.
st.set_page_config(page_title="trainmap", page_icon=str(HERE / "assets" / "favicon.png"),
                   layout="wide")

pages = [
    st.Page(widgets.PAGE_RUNS, title="Runs", icon=":material/table_rows:", default=True),
    st.Page(widgets.PAGE_RUN, title="Run", icon=":material/scatter_plot:", url_path="run"),
    st.Page(widgets.PAGE_COMPARE, title="Compare", icon=":material/compare_arrows:", url_path="compare"),
]
if (HERE / widgets.PAGE_CURRICULUM).exists():
    pages.append(st.Page(widgets.PAGE_CURRICULUM, title="Curriculum", icon=":material/tune:",
                         url_path="curriculum"))

page = st.navigation(pages)
with widgets.friendly_errors(f"the {page.title} page"):
    page.run()
