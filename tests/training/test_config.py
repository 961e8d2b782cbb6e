"""TrainConfig: each bad field refused with what was expected; epochs default per task."""

from __future__ import annotations

import math

import pytest

from training.config import TrainConfig
from training.tasks import default_epochs


@pytest.mark.parametrize("field, value, message", [
    ("lr", math.inf, "learning rate must be a positive finite number, got inf"),
    ("lr", math.nan, "learning rate must be a positive finite number, got nan"),
    ("lr", 0.0, "learning rate must be a positive finite number, got 0.0"),
    ("epochs", 0, "epochs must be a positive integer, got 0"),
    ("epochs", True, "epochs must be a positive integer, got True"),
    ("task", "imagenet", "unknown task 'imagenet'"),
])
def test_a_bad_field_is_refused_naming_it(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value}).validate()


def test_epochs_default_to_the_tasks_own():
    assert TrainConfig().epochs is None  # resolved by training.run.train
    assert default_epochs("pydoc-lm") == 5 and default_epochs("mnist1d") == 20
