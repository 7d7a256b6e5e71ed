"""Exact full-ranking evaluation: top-k lists, ranking metrics and the evaluation protocol."""

from hlrm.evaluation.metrics import METRICS, PAPER_METRICS, STANDARD_METRICS, ranking_metrics
from hlrm.evaluation.protocol import EvaluationResult, evaluate
from hlrm.evaluation.ranking import PAD, top_k

__all__ = [
    "METRICS",
    "PAD",
    "PAPER_METRICS",
    "STANDARD_METRICS",
    "EvaluationResult",
    "evaluate",
    "ranking_metrics",
    "top_k",
]
