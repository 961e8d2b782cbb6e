"""trainmap's training side: built-in tasks, models, the recording callback, GraNd.

Exports are loaded lazily so that ``import training`` (e.g. for the CLI's ``--help``)
does not pay for importing torch and Lightning.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "DynamicsRecorder": ("training.recorder", "DynamicsRecorder"),
    "Recorder": ("training.recording_session", "Recorder"),
    "per_sample_grad_norms": ("training.grand", "per_sample_grad_norms"),
    "per_sample_grad_norms_by_layer": ("training.grand", "per_sample_grad_norms_by_layer"),
    "GrandSchedule": ("training.grand", "GrandSchedule"),
    "GrandRecording": ("training.grand", "GrandRecording"),
    "TrainConfig": ("training.config", "TrainConfig"),
    "CurriculumSampler": ("training.curriculum_run", "CurriculumSampler"),
    "attach_curriculum": ("training.curriculum_run", "attach_curriculum"),
    "train": ("training.run", "train"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    import importlib

    module_name, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module_name), attribute)
