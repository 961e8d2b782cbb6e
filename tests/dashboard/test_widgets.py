"""dashboard.widgets: the helpers that need no running Streamlit script."""

from __future__ import annotations

from dashboard import widgets


def test_a_clicked_point_gives_its_sample_id_whatever_shape_customdata_arrives_in():
    first_custom_id = widgets.first_custom_id
    # a row of 2-D customdata arrives from the browser as an object keyed by position
    assert first_custom_id([{"customdata": {"0": 17, "1": 2, "2": 5}}]) == 17
    assert first_custom_id([{"customdata": [23, 1, 1]}]) == 23
    assert first_custom_id([{"customdata": 4}]) == 4
    assert first_custom_id([{"x": 0.1}, {"customdata": {"0": 9}}]) == 9
    assert first_custom_id([]) is None and first_custom_id([{"customdata": []}]) is None


def test_only_a_running_run_refreshes():
    assert widgets.live_interval("running") == widgets.LIVE_REFRESH_SECONDS
    assert widgets.live_interval("finished") is None and widgets.live_interval(None) is None
