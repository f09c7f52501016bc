"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student classifier
(``config.model``) learns from the labels and from a frozen teacher, a trained run in
``config.task.teacher_workdir``:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * CE(student, labels)

(``config.task.temperature`` T, ``config.task.alpha``; the T^2 keeps the soft term's
gradients on the scale of the hard one's as T changes). The teacher sees the same
(augmented) images as the student, standardised with its own run's statistics, in
inference mode, under ``stop_gradient``.

The teacher lives in the task, not in the state: its parameters are constants of the
compiled step that no optimizer sees, so they cannot change, and the student's state and
checkpoints are exactly a classifier's. Everything of classification works on the
student: evaluation, reports, confusion matrix, predict. The teacher is loaded (with
``train.load_trained``: its 'best' or 'last' checkpoint, ``teacher_checkpoint``, default
the one its run reported) whenever the task is built with its training data: to train, and
by ``evaluate``; data-free inference of the student (predict, export) does not need it.
The teacher must be an image classifier trained on the same dataset (same classes and
image shape); anything else is refused in one sentence.

The task is registered as 'knowledge_distillation' (tests/seam_tasks.py registers a toy
task under the name 'distillation' for the seam tests).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import optax

from practice_jax import models, optim
from practice_jax.data import augment
from practice_jax.errors import UserError
from practice_jax.state import TrainState
from practice_jax.tasks.base import FRACTION, LOWER, mean_metrics
from practice_jax.tasks.classification import ClassificationTask


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                      targets: jax.Array, temperature: float, alpha: float) -> jax.Array:
  """Each example's alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) *
  CE(student, targets); `targets` are class probabilities (one-hot labels, possibly
  smoothed). No gradient reaches the teacher's logits."""
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  soft_targets = jax.nn.softmax(teacher_logits / temperature, axis=-1)
  kl = optax.kl_divergence(jax.nn.log_softmax(student_logits / temperature, axis=-1),
                           soft_targets)
  hard = optax.softmax_cross_entropy(student_logits, targets)
  return alpha * temperature ** 2 * kl + (1.0 - alpha) * hard


class DistillationTask(ClassificationTask):
  METRICS = {"loss": LOWER, "accuracy": FRACTION, "distillation_loss": LOWER}

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ClassificationTask.config()
    c.name = "knowledge_distillation"
    c.teacher_workdir = ""          # a trained image classifier's workdir (required)
    c.teacher_checkpoint = ""       # 'best' | 'last' | '' = the one its run reported
    c.temperature = 4.0             # T: softens both distributions
    c.alpha = 0.9                   # weight of the soft (teacher) term; 1 - alpha: labels
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if not t.teacher_workdir:
      return ("config.task.teacher_workdir is empty; give the workdir of a trained "
              "classifier to distil from (e.g. --config.task.teacher_workdir=runs/mnist).")
    if t.teacher_checkpoint not in ("", "best", "last"):
      return (f"config.task.teacher_checkpoint={t.teacher_checkpoint!r} must be 'best', "
              f"'last' or '' (the one the teacher's run reported).")
    if not t.temperature > 0:
      return f"config.task.temperature={t.temperature} must be positive."
    if not 0.0 <= t.alpha <= 1.0:
      return f"config.task.alpha={t.alpha} must be in [0, 1] (the teacher term's weight)."
    if t.adversarial_training.epsilon > 0:
      return ("config.task.adversarial_training is not supported with distillation; set "
              "its epsilon to 0 or use task 'classification'.")
    return ClassificationTask.check(config)

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    self.teacher = None
    if source.num_train_examples > 0:     # built to train (or evaluate with data)
      self.teacher = self._load_teacher()
      self.unroll_on_cpu = self.unroll_on_cpu or models.unrolled_on_cpu(
          self.teacher.config.model.name)

  def _load_teacher(self):
    """The teacher as (task, host state, its config); UserError if it cannot teach."""
    from practice_jax import train, workdir as workdir_lib   # train imports tasks
    t = self.config.task
    where = t.teacher_workdir
    if not os.path.isfile(os.path.join(where, "config.json")):
      raise UserError(f"config.task.teacher_workdir={where!r} holds no trained run (no "
                      f"config.json there); train the teacher first or fix the path.")
    teacher_config = workdir_lib.load_config(where)
    data_name = self.config.data.name
    if teacher_config.data.name != data_name:
      raise UserError(f"The teacher in {where} was trained on {teacher_config.data.name!r} "
                      f"and the student on {data_name!r}; distil on the teacher's dataset.")
    exp, state, _, _ = train.load_trained(where, t.teacher_checkpoint or None)
    teacher = exp.task
    if not isinstance(teacher, ClassificationTask):
      raise UserError(f"The run in {where} is a {teacher_config.task.name!r} run; a "
                      f"teacher must be an image classifier.")
    if (list(teacher.class_names) != self.class_names
        or tuple(teacher.image_shape) != self.image_shape):
      raise UserError(f"The teacher in {where} has classes {teacher.class_names} on "
                      f"{tuple(teacher.image_shape)} images, the student's data "
                      f"{self.class_names} on {self.image_shape}; they must agree.")
    return _Teacher(teacher, jax.device_get(state), teacher_config)

  def title(self) -> str:
    teacher = f" from a {self.teacher.config.model.name}" if self.teacher else ""
    return f"{self.config.model.name}{teacher} (distilled) on {self.config.data.name}"

  def teacher_logits(self, pixels: jax.Array) -> jax.Array:
    """The frozen teacher's logits for pixels in [0, 1] (its own standardisation)."""
    if self.teacher is None:
      raise UserError("This distillation task was built without training data, so "
                      "without its teacher; it can evaluate and predict, not train.")
    task, state = self.teacher.task, self.teacher.state
    logits = task._apply(state.params, state.model_state, task.standardise(pixels),
                         train=False)[0]
    return jax.lax.stop_gradient(logits)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array]):
    aug_key, dropout_key = jax.random.split(state.step_key())
    aug, t = self.config.task.augment, self.config.task
    pixels = self.pixels(augment.augment(aug_key, batch["image"], aug.crop_padding,
                                         aug.horizontal_flip, aug.rotation_degrees))
    labels = batch["label"]
    teacher_logits = self.teacher_logits(pixels)
    images = self.standardise(pixels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  t.label_smoothing)

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, images, train=True,
                                        key=dropout_key)
      losses = distillation_loss(logits, teacher_logits, targets, t.temperature, t.alpha)
      return losses.mean(), (logits, model_state, losses)

    grads, (logits, model_state, objective) = jax.grad(loss_fn, has_aux=True)(state.params)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    model_state = optim.keep_frozen(self.config.optimizer, state.model_state, model_state)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, model_state=model_state)
    sums = self._sums(logits, labels, losses, jnp.ones_like(losses))
    sums["distillation_loss_sum"] = jnp.sum(objective)
    return new_state, sums

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    return {k: metrics[k] for k in DistillationTask.METRICS if k in metrics}


class _Teacher:
  def __init__(self, task, state, config):
    self.task, self.state, self.config = task, state, config
