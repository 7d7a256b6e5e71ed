"""Recommender models. Importing this package registers every model by name."""

from hlrm.models import (  # noqa: F401  (registration)
    adacml,
    als,
    bpr,
    cml,
    hlr,
    hybrid,
    lrml,
    neighbors,
    popularity,
    transcf,
)
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
