"""The training job's failures, each with the exit code the SageMaker contract reports (train.py)."""

from __future__ import annotations

from typing import Any

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_GATE = 3
EXIT_ARTIFACT = 4


class TrainingError(Exception):
    """A failure caused by the job's input; the message is the one line a person reads."""

    exit_code = EXIT_BAD_INPUT


class HyperparameterError(TrainingError):
    pass


class QualityGateError(TrainingError):
    """The model trained but missed the gate; evaluation.json was still written."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.metrics = metrics


class ArtifactError(TrainingError):
    """The model cannot be served: its export failed, or the exported model answers differently."""

    exit_code = EXIT_ARTIFACT
