"""Classification report (precision, recall, F1, support per class) and confusion matrix.

Plain numpy on label/prediction vectors, laid out like scikit-learn's
``classification_report`` so the numbers read the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """Row i, column j: how many examples of true class i were predicted as class j."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
  return cm


def classification_report(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
  """Per-class precision/recall/F1/support plus accuracy and macro/weighted averages.

  A class never predicted has precision 0 (and one never present has recall 0), as in
  scikit-learn with zero_division=0.
  """
  tp = np.diag(cm).astype(np.float64)
  predicted, support = cm.sum(axis=0), cm.sum(axis=1)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
  total = int(support.sum())
  weights = support / max(total, 1)
  per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                      "support": int(s)}
               for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
  return {
      "classes": per_class,
      "accuracy": float(tp.sum() / max(total, 1)),
      "macro avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                    "f1": float(f1.mean()), "support": total},
      "weighted avg": {"precision": float(weights @ precision),
                       "recall": float(weights @ recall), "f1": float(weights @ f1),
                       "support": total},
  }


def format_report(report: dict[str, Any]) -> str:
  names = list(report["classes"]) + ["macro avg", "weighted avg"]
  width = max(len(n) for n in names + ["accuracy"])
  lines = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
  row = lambda n, m: (f"{n:>{width}}  {m['precision']:9.4f} {m['recall']:9.4f} "
                      f"{m['f1']:9.4f} {m['support']:9d}")
  lines += [row(n, m) for n, m in report["classes"].items()]
  total = report["macro avg"]["support"]
  lines += ["", f"{'accuracy':>{width}}  {'':9} {'':9} {report['accuracy']:9.4f} {total:9d}"]
  lines += [row(n, report[n]) for n in ("macro avg", "weighted avg")]
  return "\n".join(lines)


def format_confusion_matrix(cm: np.ndarray, class_names: list[str]) -> str:
  width = max(max(len(n) for n in class_names), len(str(cm.max())))
  header = " " * (width + 2) + " ".join(f"{n[:width]:>{width}}" for n in class_names)
  rows = [f"{name[:width]:>{width}}  " + " ".join(f"{v:>{width}d}" for v in cm[i])
          for i, name in enumerate(class_names)]
  return "\n".join(["rows: true class, columns: predicted class", header] + rows)
