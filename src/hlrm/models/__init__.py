"""Recommender models. Importing this package registers every model by name."""

from hlrm.models import cml, popularity  # noqa: F401  (registration side effects)
from hlrm.models.base import (
    MODELS,
    History,
    Recommender,
    TrainBatch,
    canonical_name,
    create_model,
    model_parameters,
)

__all__ = [
    "MODELS",
    "History",
    "Recommender",
    "TrainBatch",
    "canonical_name",
    "create_model",
    "model_parameters",
]
