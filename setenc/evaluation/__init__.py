"""Evaluation: which sets are queries and gallery (protocols), retrieval metrics, matcher tuning off the scored
articles, and the held-out comparison report. Plots (`setenc.evaluation.plots`) import matplotlib on use only."""

from setenc.evaluation.metrics import map_at_r, recall_at_k, retrieval_metrics, vector_metrics
from setenc.evaluation.protocols import PROTOCOLS, Protocol, make_protocols
from setenc.evaluation.report import evaluate_catalog, evaluate_sets, markdown_report
from setenc.evaluation.tuning import tune_matcher, tune_matchers

__all__ = [
    "PROTOCOLS", "Protocol", "evaluate_catalog", "evaluate_sets", "make_protocols", "map_at_r", "markdown_report",
    "recall_at_k", "retrieval_metrics", "tune_matcher", "tune_matchers", "vector_metrics",
]
