"""GrandSchedule (training/grand/schedule.py): the text forms of ``--grand`` and their errors."""

from __future__ import annotations

import pytest

from training.grand import DEFAULT_SCHEDULE, GrandSchedule


@pytest.mark.parametrize(
    "text, scored, init",
    [
        ("every:1", [0, 1, 2, 3, 4, 5], False),
        ("every:3", [0, 3], False),
        ("first:2", [0, 1], False),
        ("epochs:0,5, 2", [0, 2, 5], False),
        ("steps", [0, 1, 2, 3, 4, 5], False),
        ("all", [0, 1, 2, 3, 4, 5], False),
        ("init+every:2", [0, 2, 4], True),
        (" INIT+first:1 ", [0], True),
        ("init", [], True),
        ("off", [], False),
        ("on", [e for e in range(6) if GrandSchedule.parse(DEFAULT_SCHEDULE).scores_epoch(e)], False),
        ("default", [0, 5], False),
        ("init+on", [0, 5], True),
    ],
)
def test_schedule_parse(text, scored, init):
    schedule = GrandSchedule.parse(text)
    assert [e for e in range(6) if schedule.scores_epoch(e)] == scored
    assert schedule.init is init


@pytest.mark.parametrize(
    "text",
    ["", "every", "every:", "every:0", "every:-1", "every:x", "first:0", "epochs:", "epochs:1,,2",
     "epochs:a", "epochs:-1", "sometimes", "init+", "init+init", "init+off", "every:1.5", "steps:3"],
)
def test_schedule_parse_rejects_bad_text(text):
    with pytest.raises(ValueError, match="GraNd schedule"):
        GrandSchedule.parse(text)


def test_cli_reports_bad_schedule(tmp_path, capsys):
    from training.cli import main

    code = main(["train", "--task", "mnist1d", "--model", "mlp", "--epochs", "1", "--grand", "every:0",
                 "--store", str(tmp_path / "store"), "--no-progress"])
    assert code != 0
    assert "trainmap: error:" in capsys.readouterr().err
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())
