"""Evaluation: metrics from predictions, reports as text/JSON/CSV, and plots.

Importing this package is cheap (numpy only); matplotlib loads inside the plot functions.
"""
from ocula.evaluation.metrics import (
    calibration_bins,
    classification_report,
    confusion_matrix,
    ece_from_bins,
    expected_calibration_error,
    negative_log_likelihood,
    report_from_confusion,
    topk_accuracy,
)
from ocula.evaluation.plots import plot_confusion_matrix, plot_training_curves
from ocula.evaluation.report import (
    format_report,
    write_confusion_csv,
    write_json,
    write_per_class_csv,
)

__all__ = [
    "calibration_bins",
    "classification_report",
    "confusion_matrix",
    "ece_from_bins",
    "expected_calibration_error",
    "format_report",
    "negative_log_likelihood",
    "plot_confusion_matrix",
    "plot_training_curves",
    "report_from_confusion",
    "topk_accuracy",
    "write_confusion_csv",
    "write_json",
    "write_per_class_csv",
]
