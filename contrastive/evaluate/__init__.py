"""Evaluation: zero-shot classification, retrieval, binding, probes, embedding
geometry, how a space treats its negatives, and n-modal prediction (`tuple_scores`).

Pure functions over embeddings (arrays in, plain floats out), then runners that embed evaluation
sets with any model (`embed_dataset`, `run_tasks`, `evaluate`), a trainer's run directory
(`evaluate_workdir`, what `python -m contrastive.evaluate --workdir` calls), the standard
zero-shot table over tfds (`run_suite_pretrained`, `run_suite_workdir`, `SUITES`), a report
(`write_report`) and notebook helpers (`examples_by_field`, `Embedder`, `show_report`, ...).
"""

from contrastive.evaluate.binding import binding_metrics
from contrastive.evaluate.context import Context
from contrastive.evaluate.embed import embed_dataset
from contrastive.evaluate.geometry import alignment
from contrastive.evaluate.geometry import effective_rank
from contrastive.evaluate.geometry import geometry_metrics
from contrastive.evaluate.geometry import mean_cosines
from contrastive.evaluate.geometry import modality_gap
from contrastive.evaluate.geometry import modality_separability
from contrastive.evaluate.geometry import similarity_samples
from contrastive.evaluate.geometry import singular_values
from contrastive.evaluate.geometry import uniformity
from contrastive.evaluate.geometry import variance_dims
from contrastive.evaluate.imagenet import IMAGENET_CLASSNAMES
from contrastive.evaluate.imagenet import OPENAI_IMAGENET_TEMPLATES
from contrastive.evaluate.imagenet import SIMPLE_IMAGENET_TEMPLATES
from contrastive.evaluate.interactive import Embedder
from contrastive.evaluate.interactive import Table
from contrastive.evaluate.interactive import examples_by_field
from contrastive.evaluate.interactive import image_grid
from contrastive.evaluate.interactive import metrics_table
from contrastive.evaluate.interactive import plot_comparison
from contrastive.evaluate.interactive import report_images
from contrastive.evaluate.interactive import show_report
from contrastive.evaluate.negatives import hardest_negative_share
from contrastive.evaluate.negatives import tolerance
from contrastive.evaluate.nmodal import predict_accuracy
from contrastive.evaluate.nmodal import tuple_scores
from contrastive.evaluate.probes import fit_logistic_regression
from contrastive.evaluate.probes import knn_classifier
from contrastive.evaluate.probes import linear_probe
from contrastive.evaluate.report import append_history
from contrastive.evaluate.report import read_history
from contrastive.evaluate.report import write_metrics
from contrastive.evaluate.report import write_report
from contrastive.evaluate.retrieval import rank_metrics
from contrastive.evaluate.retrieval import retrieval_metrics
from contrastive.evaluate.retrieval import retrieval_ranks
from contrastive.evaluate.runner import check_tasks
from contrastive.evaluate.runner import default_tasks
from contrastive.evaluate.runner import evaluate
from contrastive.evaluate.runner import run_tasks
from contrastive.evaluate.similarity import log_mean_gaussian_potential
from contrastive.evaluate.similarity import positive_ranks
from contrastive.evaluate.similarity import topk
from contrastive.evaluate.sources import SOURCES
from contrastive.evaluate.sources import EvalSource
from contrastive.evaluate.sources import data_sources
from contrastive.evaluate.suite import run_pretrained as run_suite_pretrained
from contrastive.evaluate.suite import run_workdir as run_suite_workdir
from contrastive.evaluate.suite import suite_tasks
from contrastive.evaluate.suite_datasets import SUITES
from contrastive.evaluate.tasks import TASKS
from contrastive.evaluate.workdir import evaluate_workdir
from contrastive.evaluate.zeroshot import class_prototypes
from contrastive.evaluate.zeroshot import marginal_log_probs
from contrastive.evaluate.zeroshot import prompts
from contrastive.evaluate.zeroshot import score_metrics
from contrastive.evaluate.zeroshot import zeroshot_metrics

__all__ = [
  "Context",
  "Embedder",
  "EvalSource",
  "IMAGENET_CLASSNAMES",
  "OPENAI_IMAGENET_TEMPLATES",
  "SIMPLE_IMAGENET_TEMPLATES",
  "SOURCES",
  "SUITES",
  "TASKS",
  "Table",
  "alignment",
  "append_history",
  "binding_metrics",
  "check_tasks",
  "class_prototypes",
  "data_sources",
  "default_tasks",
  "effective_rank",
  "embed_dataset",
  "evaluate",
  "evaluate_workdir",
  "examples_by_field",
  "fit_logistic_regression",
  "geometry_metrics",
  "hardest_negative_share",
  "image_grid",
  "knn_classifier",
  "linear_probe",
  "log_mean_gaussian_potential",
  "marginal_log_probs",
  "mean_cosines",
  "metrics_table",
  "modality_gap",
  "modality_separability",
  "plot_comparison",
  "positive_ranks",
  "predict_accuracy",
  "prompts",
  "rank_metrics",
  "read_history",
  "report_images",
  "retrieval_metrics",
  "retrieval_ranks",
  "run_suite_pretrained",
  "run_suite_workdir",
  "run_tasks",
  "score_metrics",
  "show_report",
  "similarity_samples",
  "singular_values",
  "suite_tasks",
  "tolerance",
  "topk",
  "tuple_scores",
  "uniformity",
  "variance_dims",
  "write_metrics",
  "write_report",
  "zeroshot_metrics",
]
