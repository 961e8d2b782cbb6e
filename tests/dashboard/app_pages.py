"""Running dashboard pages in Streamlit's AppTest, and reading what they show."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")


def app_test(store, page: str | None = None, **params):
    """An AppTest of the whole app on ``store``, opened on ``page`` with URL ``params``."""
    from streamlit.testing.v1 import AppTest

    os.environ["TRAINMAP_STORE"] = str(store.root)
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def run_clean(at):
    """Run and assert that no exception (traceback) was shown."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def figure_titles(at) -> list[str]:
    return [(figure["layout"].get("title") or {}).get("text", "") for figure in figures(at)]


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.info, *at.warning, *at.error)]
    return "\n".join(str(p) for p in parts)
