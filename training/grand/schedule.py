"""On which epochs GraNd is recorded: ``GrandSchedule`` and its text forms (``--grand``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What ``--grand on`` / ``--grand default`` means: every 5th epoch (0, 5, 10, ...). Scoring
#: one epoch in five keeps a whole run close to the cost of an unscored one (measured in
#: benchmarks/results/grand.md), and gives several scorings "a few epochs in" to average
#: (Paul et al. 2021; Kirsch 2023).
DEFAULT_SCHEDULE = "every:5"

_SCHEDULE_HELP = (
    "expected off, on/default (= " + DEFAULT_SCHEDULE + "), every:K (epochs 0, K, 2K, ...), "
    "first:E (epochs 0..E-1), epochs:0,5,10, steps/all (every step), init (only before "
    "training), each optionally prefixed with init+ (also once at initialisation)"
)


@dataclass(frozen=True)
class GrandSchedule:
    """On which epochs GraNd is recorded; every step of a scheduled epoch is scored, so
    each training sample gets one exact GraNd per scheduled epoch.

    ``init``: also score every training sample once before the first update (stored as
    epoch -1, step -1; summaries average epochs ≥ 0 only, since GraNd at initialisation
    does not beat random, Kirsch 2023).
    """

    kind: str  # "every", "first", "epochs", "all", "none"
    k: int = 1
    epochs: tuple[int, ...] = ()
    init: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> GrandSchedule:
        original = text
        if not isinstance(text, str):
            raise ValueError(f"bad GraNd schedule {original!r}: {_SCHEDULE_HELP}")
        text = text.strip().lower()
        if text in ("on", "default"):
            text = DEFAULT_SCHEDULE
        init = False
        if text.startswith("init+"):
            init, text = True, text[len("init+"):].strip()
            if text in ("on", "default"):
                text = DEFAULT_SCHEDULE
        if text in ("off", "none", "never") and not init:
            return cls("none", text=original)
        if text == "init" and not init:
            return cls("none", init=True, text=original)
        if text in ("steps", "all"):
            return cls("all", init=init, text=original)

        def integer(value: str, what: str, minimum: int) -> int:
            if not re.fullmatch(r"\d+", value.strip()):
                raise ValueError(f"bad GraNd schedule {original!r}: {what} must be an integer >= {minimum}; {_SCHEDULE_HELP}")
            number = int(value)
            if number < minimum:
                raise ValueError(f"bad GraNd schedule {original!r}: {what} must be >= {minimum}; {_SCHEDULE_HELP}")
            return number

        kind, sep, arg = text.partition(":")
        if sep and kind == "every":
            return cls("every", k=integer(arg, "K", 1), init=init, text=original)
        if sep and kind == "first":
            return cls("first", k=integer(arg, "E", 1), init=init, text=original)
        if sep and kind == "epochs":
            parts = [part for part in arg.split(",")]
            if not arg.strip() or any(not part.strip() for part in parts):
                raise ValueError(f"bad GraNd schedule {original!r}: epochs needs a comma-separated list; {_SCHEDULE_HELP}")
            epochs = tuple(sorted({integer(part, "an epoch", 0) for part in parts}))
            return cls("epochs", epochs=epochs, init=init, text=original)
        raise ValueError(f"bad GraNd schedule {original!r}: {_SCHEDULE_HELP}")

    def scores_epoch(self, epoch: int) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "every":
            return epoch % self.k == 0
        if self.kind == "first":
            return epoch < self.k
        if self.kind == "epochs":
            return epoch in self.epochs
        return False
