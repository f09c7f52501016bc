"""The PNGs a run writes: what each axis shows and how it is labelled."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from practice_jax.reporting import plots


@pytest.fixture
def figures(monkeypatch):
  """The figures the plotting functions draw, kept open for inspection."""
  kept, close = [], plots.plt.close
  monkeypatch.setattr(plots.plt, "close", kept.append)
  yield kept
  for fig in kept:
    close(fig)


def classifier_records(steps_per_epoch=100, epochs=3):
  records = []
  for step in range(10, steps_per_epoch * epochs + 1, 10):
    records.append({"step": step, "split": "train", "loss": 1.0 / step ** 0.5,
                    "accuracy": 1.0 - 0.5 / step ** 0.8})
    if step % steps_per_epoch == 0:
      records.append({"step": step, "split": "validation", "loss": 1.2 / step ** 0.5,
                      "accuracy": 0.985 + 0.003 * step / (steps_per_epoch * epochs)})
  records.append({"step": steps_per_epoch * epochs, "split": "test", "loss": 0.07,
                  "accuracy": 0.9875})
  return records


def all_axes(fig) -> list:
  """The figure's axes and their secondary axes (the bits and recall scales)."""
  return fig.axes + [child for ax in fig.axes for child in ax.child_axes]


def labels(axis) -> list[str]:
  return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_learning_curves_show_error_rate_on_a_log_axis_with_epochs_and_test(tmp_path, figures):
  path = tmp_path / "learning_curves.png"
  plots.learning_curves(classifier_records(), str(path), title="mlp on mnist",
                        steps_per_epoch=100)
  assert Image.open(path).size[0] >= 1000
  fig = figures[-1]
  loss_ax, error_ax = fig.axes[:2]
  assert loss_ax.get_yscale() == error_ax.get_yscale() == "log"
  assert "error rate" in error_ax.get_ylabel()
  fig.canvas.draw()
  ticks = labels(error_ax.yaxis)
  assert len(ticks) >= 3 and all(t.endswith("%") for t in ticks), ticks
  lo, hi = error_ax.get_ylim()
  assert lo < 0.0125 < hi and hi < 0.6        # the test error (1.25%) is inside the view
  epoch_lines = [line for line in loss_ax.lines if line.get_linestyle() == ":"]
  assert [line.get_xdata()[0] for line in epoch_lines] == [100, 200, 300]
  legend = [t.get_text() for t in error_ax.get_legend().get_texts()]
  assert legend == ["train", "validation", "test (error 1.25%)"]
  assert fig._suptitle.get_text() == "mlp on mnist"


def test_epochs_come_from_the_run_record_beside_the_picture(tmp_path, figures):
  (tmp_path / "run.json").write_text(json.dumps({"steps_per_epoch": 100}))
  plots.learning_curves(classifier_records(), str(tmp_path / "learning_curves.png"))
  dotted = [line for line in figures[-1].axes[0].lines if line.get_linestyle() == ":"]
  assert len(dotted) == 3


def test_language_model_loss_has_readable_ticks_and_a_bits_per_character_scale(tmp_path,
                                                                                figures):
  records = [{"step": s, "split": "train", "loss": 2.2 + 1.0 / s ** 0.3,
              "bits_per_char": (2.2 + 1.0 / s ** 0.3) / np.log(2), "accuracy": 0.3}
             for s in range(100, 2001, 100)]
  records.append({"step": 2000, "split": "validation", "loss": 2.35,
                  "bits_per_char": 2.35 / np.log(2), "accuracy": 0.31})
  plots.learning_curves(records, str(tmp_path / "lc.png"))
  fig = figures[-1]
  fig.canvas.draw()
  loss_ax = fig.axes[0]
  ticks = labels(loss_ax.yaxis)
  assert len(ticks) >= 3 and all("10^" not in t and "times" not in t for t in ticks), ticks
  bits = [ax for ax in all_axes(fig) if ax.get_ylabel() == "bits per character"]
  assert bits, "no bits-per-character scale"
  bit_ticks = [float(t) for t in labels(bits[0].yaxis)]
  assert len(bit_ticks) >= 3 and 3.2 < min(bit_ticks) and max(bit_ticks) < 4.5


def test_log_ticks_are_round_numbers_and_enough_of_them():
  assert plots._log_ticks(0.05, 1.2) == [0.05, 0.1, 0.2, 0.5, 1.0]
  assert plots._log_ticks(0.004, 0.3) == [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
  assert plots._log_ticks(2.25, 3.1) == []     # too narrow: the axis falls back to linear ticks
  for lo, hi in ((0.001, 0.3), (2.25, 3.1), (0.95, 1.05), (1e-4, 0.1)):
    ticks = plots._log_ticks(lo, hi)
    assert ticks == [] or 3 <= len(ticks) <= 10, (lo, hi, ticks)
    assert all(lo <= t <= hi for t in ticks)


def test_perfect_accuracy_is_drawn_at_the_floor_not_lost(tmp_path, figures):
  records = [{"step": 1, "split": "train", "loss": 0.1, "accuracy": 1.0},
             {"step": 2, "split": "train", "loss": 0.05, "accuracy": 0.99}]
  plots.learning_curves(records, str(tmp_path / "lc.png"))
  errors = figures[-1].axes[1].lines[0].get_ydata()
  assert list(errors) == pytest.approx([plots.ERROR_FLOOR, 0.01])


def test_confusion_matrix_colours_mistakes_on_their_own_scale(tmp_path, figures):
  cm = np.diag([980, 1130, 1020, 1000, 970, 880, 950, 1010, 960, 990])
  cm[9, 4], cm[7, 2], cm[3, 5] = 12, 3, 1
  path = tmp_path / "test_confusion_matrix.png"
  plots.confusion_matrix(cm, [str(i) for i in range(10)], str(path), title="accuracy 99.84%")
  assert path.is_file()
  fig = figures[-1]
  ax = fig.axes[0]
  mistakes = ax.images[-1]
  assert mistakes.norm.vmax == 12             # the worst mistake, not the diagonal
  rgba = mistakes.to_rgba(mistakes.get_array())
  assert rgba[3, 5, :3].sum() < 2.7           # a single mistake is visibly coloured
  assert np.ma.is_masked(mistakes.get_array()[0, 0])   # the diagonal is not on that scale
  assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())   # digits stand upright
  texts = {t.get_text() for t in ax.texts}
  assert {"980", "12", "3", "1"} <= texts
  fig.canvas.draw()
  recall_axis = [a for a in all_axes(fig) if "recall" in a.get_ylabel()]
  assert recall_axis and "98.8%" in labels(recall_axis[0].yaxis)   # 990 / 1002


def test_confusion_matrix_turns_long_names_and_handles_many_classes(tmp_path, figures):
  names = ["airplane", "automobile", "bird"]
  plots.confusion_matrix(np.array([[9, 1, 0], [0, 10, 0], [2, 0, 8]]), names,
                         str(tmp_path / "cm.png"))
  assert all(t.get_rotation() == 45 for t in figures[-1].axes[0].get_xticklabels())
  many = np.eye(100, dtype=int) * 90 + 1
  plots.confusion_matrix(many, [f"c{i}" for i in range(100)], str(tmp_path / "cm100.png"))
  assert (tmp_path / "cm100.png").is_file()


def test_a_low_accuracy_stays_a_plain_percentage(tmp_path, figures):
  records = [{"step": s, "split": "train", "loss": 3.0 / s, "accuracy": 0.2 + s / 1000}
             for s in range(10, 301, 10)]
  records.append({"step": 300, "split": "test", "loss": 2.4, "accuracy": 0.31})
  plots.learning_curves(records, str(tmp_path / "lc.png"))
  ax = figures[-1].axes[1]
  assert ax.get_yscale() == "linear" and ax.get_ylabel() == "accuracy"
  assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "test (31%)"
