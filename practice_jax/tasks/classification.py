"""Image classification: softmax cross-entropy and accuracy, with on-device augmentation,
label smoothing, a classification report and a confusion matrix; optionally robust
accuracy under L-infinity attacks (FGSM, PGD) and PGD adversarial training
(practice_jax/attacks.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from practice_jax import attacks, lora, models, optim
from practice_jax.data import augment
from practice_jax.errors import UserError
from practice_jax.models.layers import for_batch
from practice_jax.models.settings import one_of
from practice_jax.reporting import classification as report_lib
from practice_jax.reporting import plots
from practice_jax.reporting import robustness as robustness_lib
from practice_jax.state import INIT_STREAM, STEP_STREAM, TrainState, stream_key
from practice_jax.tasks.base import (FRACTION, LOWER, Evaluator, Task, mean_metrics,
                                     pad_for_eval)

Metrics = dict[str, jax.Array]
ATTACK_STREAM = 3     # random starts of PGD (state.py's streams are 0-2)


class ClassificationTask(Task):
  DATA_KINDS = ("image",)
  METRICS = {"loss": LOWER, "accuracy": FRACTION}
  MONITOR = "validation/accuracy"
  INPUT = "image"                   # the batch field the model reads
  OUTPUTS = tuple(f"{split}_{name}" for split in ("test", "validation")
                  for name in ("report.txt", "report.json", "confusion_matrix.png")
                  ) + ("robustness.png", "robustness.json")

  @staticmethod
  def config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "classification"
    c.label_smoothing = 0.0
    # Training-time augmentation, on the device, from the step's key (never at evaluation).
    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 0             # random crop after zero-padding by this many pixels
    c.augment.horizontal_flip = False      # random left-right mirror
    c.augment.rotation_degrees = 0.0       # random rotation within +-this many degrees
    # Robust accuracy under L-infinity attacks on the images in pixel space [0, 1] (before
    # standardisation): one evaluator per method and epsilon, named like 'pgd_eps0.3',
    # reporting loss and accuracy on the attacked examples; at the end, robustness.png
    # (accuracy against epsilon) and robustness.json. No methods: no attack evaluators.
    c.attacks = ml_collections.ConfigDict()
    c.attacks.methods = ()                 # any of "fgsm", "pgd"
    c.attacks.epsilons = ()                # radii in pixel units, e.g. (0.1, 0.2, 0.3)
    c.attacks.steps = 40                   # PGD: steps of
    c.attacks.step_size = 0.01             #   this size (pixel units),
    c.attacks.random_start = True          #   from a uniform point in the epsilon ball
    c.attacks.split = "test"               # the split attacked
    c.attacks.max_examples = 0             # its first N examples; 0 = all of them
    c.attacks.periodic = False             # also at every evaluation, not only at the end
    # PGD adversarial training (Madry et al. 2018): every training batch is replaced by
    # its PGD examples against the current parameters (model in inference mode: no
    # dropout, running batch-norm statistics). epsilon 0 = off.
    c.adversarial_training = ml_collections.ConfigDict()
    c.adversarial_training.epsilon = 0.0
    c.adversarial_training.steps = 7
    c.adversarial_training.step_size = 0.01
    c.adversarial_training.random_start = True
    return c

  @staticmethod
  def check(config: ml_collections.ConfigDict) -> str | None:
    t = config.task
    if not 0.0 <= t.label_smoothing < 1.0:
      return f"config.task.label_smoothing={t.label_smoothing} must be in [0, 1)."
    if t.augment.crop_padding < 0:
      return f"config.task.augment.crop_padding={t.augment.crop_padding} must be >= 0."
    if not 0.0 <= t.augment.rotation_degrees <= 180.0:
      return (f"config.task.augment.rotation_degrees={t.augment.rotation_degrees} must be "
              f"in [0, 180].")
    return (_check_attacks(t.attacks, config.data)
            or _check_adversarial_training(t.adversarial_training)
            or models.check(config.model) or Task.check(config))

  def __init__(self, config: ml_collections.ConfigDict, source, parallel):
    super().__init__(config, source, parallel)
    info = source.info
    self.num_classes, self.class_names = info["num_classes"], list(info["class_names"])
    self.image_shape = tuple(info["image_shape"])
    model_kwargs = {k: v for k, v in config.model.items() if k != "name"}
    self.model = models.build(config.model.name, self.num_classes, **model_kwargs)
    self.unroll_on_cpu = models.unrolled_on_cpu(config.model.name)
    self.mean = jnp.asarray(info["mean"], jnp.float32)
    self.std = jnp.asarray(info["std"], jnp.float32)

  # -- model ------------------------------------------------------------------------

  def preprocess(self, images: jax.Array) -> jax.Array:
    """uint8 images -> float32, standardised with the training set's channel stats."""
    return self.standardise(self.pixels(images))

  @staticmethod
  def pixels(images: jax.Array) -> jax.Array:
    """Images (uint8, or floats on the same 0-255 scale) -> float32 pixels in [0, 1]:
    the space the attacks work in."""
    return images.astype(jnp.float32) / 255.0

  def standardise(self, pixels: jax.Array) -> jax.Array:
    return (pixels - self.mean) / self.std

  def _apply(self, params, model_state, images, *, train: bool, key=None):
    variables = {"params": lora.merge(params, self.config), **model_state}
    rngs = {"dropout": key} if key is not None else None
    if train and model_state:
      return self.model.apply(variables, images, train=True, rngs=rngs,
                              mutable=list(model_state))
    return self.model.apply(variables, images, train=train, rngs=rngs), model_state

  def init_state(self, plan: optim.Plan) -> TrainState:
    self.tx, schedule = optim.build(self.config.optimizer, self.config.schedule, plan)
    self.schedules = {"learning_rate": schedule}
    key = stream_key(self.config.seed, INIT_STREAM)
    sample = jnp.zeros((1,) + self.image_shape, jnp.float32)
    variables = jax.jit(lambda k: self.model.init({"params": k}, sample, train=False))(key)
    variables = dict(variables)
    params = lora.add(self.config, variables.pop("params"))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params), model_state=variables,
                      key=stream_key(self.config.seed, STEP_STREAM))

  # -- steps ------------------------------------------------------------------------

  def _sums(self, logits, labels, losses, mask) -> Metrics:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss_sum": jnp.sum(losses * mask), "accuracy_sum": jnp.sum(correct * mask),
            "count": jnp.sum(mask)}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array]
                 ) -> tuple[TrainState, Metrics]:
    aug_key, dropout_key = jax.random.split(state.step_key())
    aug = self.config.task.augment
    pixels = self.pixels(augment.augment(aug_key, batch["image"], aug.crop_padding,
                                         aug.horizontal_flip, aug.rotation_degrees))
    labels = batch["label"]
    adversarial = self.config.task.adversarial_training
    if adversarial.epsilon > 0:
      noise = (for_batch(attacks.uniform_noise, jax.random.fold_in(
          state.step_key(), ATTACK_STREAM), pixels.shape)
               if adversarial.random_start else None)
      pixels = jax.lax.stop_gradient(attacks.pgd(
          self._attack_loss(state, labels), pixels, adversarial.epsilon, adversarial.steps,
          adversarial.step_size, noise, unroll=self._unroll_attacks))
    images = self.standardise(pixels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  self.config.task.label_smoothing)

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, images, train=True,
                                        key=dropout_key)
      return optax.softmax_cross_entropy(logits, targets).mean(), (logits, model_state)

    grads, (logits, model_state) = jax.grad(loss_fn, has_aux=True)(state.params)
    # Reported: plain cross-entropy, comparable with validation even under smoothing.
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    model_state = optim.keep_frozen(self.config.optimizer, state.model_state, model_state)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state, model_state=model_state)
    return new_state, self._sums(logits, labels, losses, jnp.ones_like(losses))

  def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
    logits = self.logits(state, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    return self._sums(logits, batch["label"], losses, batch["mask"])

  def logits(self, state: TrainState, images: jax.Array) -> jax.Array:
    return self._apply(state.params, state.model_state, self.preprocess(images),
                       train=False)[0]

  @property
  def float_network(self):
    """The network in float32 (a quantization-aware task's, without its fake int8)."""
    return self.model

  def float_logits(self, state: TrainState, images: jax.Array,
                   params=None, network=None) -> jax.Array:
    """uint8 images -> logits of `float_network` (or `network`, another build of it
    with the same parameters) with the run's plain parameters (LoRA adapters merged),
    or with `params` (plain) in their place: what export converts and compress
    quantizes."""
    params = lora.merge(state.params, self.config) if params is None else params
    return (network or self.float_network).apply(
        {"params": params, **state.model_state}, self.preprocess(images), train=False)

  @staticmethod
  def summarize(sums: dict) -> dict[str, float]:
    metrics = mean_metrics(sums)
    return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}

  # -- adversarial robustness -------------------------------------------------------

  @property
  def _unroll_attacks(self) -> bool:
    """Attack steps unrolled where the train steps are (CPU, convolutions)."""
    return self.unroll_on_cpu and getattr(self.parallel, "on_cpu", False)

  def _attack_loss(self, state: TrainState, labels: jax.Array):
    """pixels -> each example's cross-entropy, the model in inference mode."""
    def losses(pixels):
      logits = self._apply(state.params, state.model_state, self.standardise(pixels),
                           train=False)[0]
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return losses

  def _attacked_sums(self, method: str | None, epsilon: jax.Array, state: TrainState,
                     padded: dict[str, jax.Array], index: jax.Array) -> Metrics:
    """Masked metric sums of batch `index` of a padded split, attacked by `method`
    (None: clean); random starts from (seed, example index)."""
    size = self._attack_batch
    batch = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, index * size, size),
                         padded)
    batch = jax.lax.with_sharding_constraint(batch, self.parallel.batch_sharded)
    pixels, labels = self.pixels(batch["image"]), batch["label"]
    if method is not None:
      a = self.config.task.attacks
      key = stream_key(self.config.seed, ATTACK_STREAM)
      noise = (jax.vmap(lambda i: attacks.uniform_noise(jax.random.fold_in(key, i),
                                                         pixels.shape[1:]))(batch["index"])
               if method == "pgd" and a.random_start else None)
      pixels = attacks.attack(method, self._attack_loss(state, labels), pixels, epsilon,
                              a.steps, a.step_size, noise, unroll=self._unroll_attacks)
    logits = self._apply(state.params, state.model_state, self.standardise(pixels),
                         train=False)[0]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return self._sums(logits, labels, losses, batch["mask"])

  def _attacked_split(self) -> tuple[dict, int]:
    """The attacked examples, padded to whole evaluation batches, and their number."""
    a = self.config.task.attacks
    splits = self.source.eval_splits
    if a.split not in splits:
      raise UserError(f"config.task.attacks.split={a.split!r} is not a split of "
                      f"{self.config.data.name} here (it has {', '.join(splits) or 'none'}); "
                      f"choose one of those.")
    split = splits[a.split]
    n = len(split["label"])
    n = min(n, a.max_examples) if a.max_examples else n
    data = {"image": split["image"][:n], "label": split["label"][:n],
            "index": np.arange(n, dtype=np.int32)}
    # Fewer examples than a batch: one batch of them (whole rows for every device).
    devices = self.parallel.num_devices
    self._attack_batch = min(self.config.eval_batch_size, -(-n // devices) * devices)
    return self.parallel.replicate(pad_for_eval(data, self._attack_batch)), n

  def _attack_runner(self, method: str | None, epsilon: float, padded: dict):
    """state -> {loss, accuracy} over the attacked examples, one dispatch per batch (a
    batch's attack steps are a loop already; XLA:CPU runs convolutions inside a loop
    over batches slowly). One compilation per method, whatever the epsilons."""
    if method not in self._attack_fns:
      self._attack_fns[method] = jax.jit(functools.partial(self._attacked_sums, method),
                                         out_shardings=self.parallel.replicated)
    fn, eps = self._attack_fns[method], jnp.float32(epsilon)
    num_batches = padded["mask"].shape[0] // self._attack_batch

    def run(state):
      sums = None
      for i in range(num_batches):
        batch_sums = fn(eps, state, padded, jnp.int32(i))
        sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
      return self.summarize(jax.device_get(sums))
    return run

  def _attack_runs(self) -> dict[str, tuple[str, float, object]]:
    """{evaluator name: (method, epsilon, state -> metrics)} for config.task.attacks,
    built once, with the clean run of the same examples (epsilon 0)."""
    if getattr(self, "_runs", None) is None:
      a = self.config.task.attacks
      padded, self._attacked_examples = self._attacked_split()
      self._attack_fns: dict[str | None, object] = {}     # method -> compiled batch
      self._clean_run = self._attack_runner(None, 0.0, padded)
      self._robust: dict[str, tuple[int, dict[str, float]]] = {}   # name -> (step, metrics)
      self._runs = {attack_name(m, e): (m, float(e), self._attack_runner(m, e, padded))
                    for m in a.methods for e in a.epsilons}
    return self._runs

  def _robust_metrics(self, name: str, state: TrainState) -> dict[str, float]:
    step = int(jax.device_get(state.step))
    kept = self._robust.get(name)
    if kept is None or kept[0] != step:
      kept = self._robust[name] = (step, self._runs[name][2](state))
    return kept[1]

  def evaluators(self) -> dict[str, Evaluator]:
    """The split evaluators, and one per attack and epsilon when config.task.attacks
    names any (at the end only, unless attacks.periodic)."""
    evaluators = super().evaluators()
    a = self.config.task.get("attacks")
    if a and a.methods:
      for name in self._attack_runs():
        evaluators[name] = Evaluator(functools.partial(self._robust_metrics, name),
                                     periodic=a.periodic)
    return evaluators

  def robustness(self, state: TrainState, out) -> str:
    """Accuracy against epsilon for every attack (the evaluators' results at this state,
    else computed now) from the clean accuracy of the same examples at epsilon 0: as text,
    robustness.json and robustness.png."""
    a = self.config.task.attacks
    results = {name: {"method": method, "epsilon": epsilon,
                      **self._robust_metrics(name, state)}
               for name, (method, epsilon, _) in self._attack_runs().items()}
    clean = self._clean_run(state)
    n, split = self._attacked_examples, a.split
    pgd = (f"; PGD: {a.steps} steps of {a.step_size:g}"
           + (", random start" if a.random_start else "") if "pgd" in a.methods else "")
    setting = f"L-infinity, pixels in [0, 1]{pgd}"
    out.json("robustness.json", {"split": split, "examples": n, "clean": clean,
                                 "attacks": results, "setting": setting})
    curves = {method: [(0.0, clean["accuracy"])] + sorted(
        (r["epsilon"], r["accuracy"]) for r in results.values() if r["method"] == method)
              for method in a.methods}
    trained = self.config.task.adversarial_training
    how = (f"PGD-trained (epsilon {trained.epsilon:g}, {trained.steps} steps)"
           if trained.epsilon > 0 else "trained on clean images")
    out.figure("robustness.png", lambda path: robustness_lib.robust_accuracy(
        curves, path, title=f"{self.title()}, {how}: {split}, {n} examples",
        subtitle=setting))
    return robustness_lib.format_table(
        curves, f"Robust accuracy, {split} split, {n} examples ({setting}):")

  # -- reports ----------------------------------------------------------------------

  def artifacts(self, state: TrainState, step: int, out, final: bool) -> str:
    if not final:
      return ""
    text = ""
    if "test" in self.source.eval_splits:
      text = self.report(state, "test", out)["text"]
    a = self.config.task.get("attacks")
    if a and a.methods:
      text += ("\n" if text else "") + self.robustness(state, out)
    return text

  def report(self, state: TrainState, split: str, out) -> dict:
    """Classification report and confusion matrix of `split`, as text, JSON and PNG."""
    data = self.source.eval_splits[split]
    batch_size = self.config.eval_batch_size
    padded = self.parallel.replicate(pad_for_eval(data, batch_size))
    predict = self.parallel.compile_predict(self.logits, batch_size, self.INPUT)
    n = len(data["label"])
    logits = np.asarray(jax.device_get(predict(state, padded)))[:n]
    cm = report_lib.confusion_matrix(data["label"], logits.argmax(-1), self.num_classes)
    report = report_lib.classification_report(cm, self.class_names)
    text = (f"{split} split, {n} examples\n\n" + report_lib.format_report(report) + "\n\n"
            + report_lib.format_confusion_matrix(cm, self.class_names) + "\n")
    out.text(f"{split}_report.txt", text)
    out.json(f"{split}_report.json", {**report, "confusion_matrix": cm.tolist()})
    out.figure(f"{split}_confusion_matrix.png", lambda path: plots.confusion_matrix(
        cm, self.class_names, path,
        title=f"{self.title()} ({split}): accuracy {report['accuracy']:.2%}"))
    return {"report": report, "text": text}


def attack_name(method: str, epsilon: float) -> str:
  """The evaluator of `method` at `epsilon`: 'pgd_eps0.3'."""
  return f"{method}_eps{epsilon:g}"


def _check_attacks(a: ml_collections.ConfigDict, data: ml_collections.ConfigDict
                   ) -> str | None:
  methods, epsilons = tuple(a.methods), tuple(a.epsilons)
  for method in methods:
    problem = one_of(attacks.METHODS)(method)
    if problem:
      return f"config.task.attacks.methods has {method!r}, which {problem}"
  if bool(methods) != bool(epsilons):
    return ("config.task.attacks needs both methods (e.g. ('fgsm', 'pgd')) and epsilons "
            f"(e.g. (0.1, 0.2, 0.3)); it has methods={methods} and epsilons={epsilons}.")
  if len(set(methods)) != len(methods) or len(set(epsilons)) != len(epsilons):
    return (f"config.task.attacks lists a method or an epsilon twice (methods={methods}, "
            f"epsilons={epsilons}); give each once.")
  for epsilon in epsilons:
    if not 0.0 < epsilon <= 1.0:
      return (f"config.task.attacks.epsilons has {epsilon}; each must be in (0, 1] (pixel "
              f"units: 0.3 is 76 of 255 grey levels).")
  if "pgd" in methods:
    if a.steps < 1 or a.step_size <= 0:
      return (f"config.task.attacks.steps={a.steps} and step_size={a.step_size} must be "
              f"positive.")
  if a.split not in ("validation", "test"):
    return f"config.task.attacks.split={a.split!r} must be 'validation' or 'test'."
  if methods and a.split == "validation" and data.get("validation_size", 1) == 0:
    return ("config.task.attacks.split='validation' but config.data.validation_size=0 "
            "holds out no validation split; attack 'test' or hold out examples.")
  if a.max_examples < 0:
    return f"config.task.attacks.max_examples={a.max_examples} must be >= 0 (0: all)."
  return None


def _check_adversarial_training(t: ml_collections.ConfigDict) -> str | None:
  if not 0.0 <= t.epsilon <= 1.0:
    return (f"config.task.adversarial_training.epsilon={t.epsilon} must be in [0, 1] "
            f"(pixel units; 0 = off).")
  if t.epsilon > 0 and (t.steps < 1 or t.step_size <= 0):
    return (f"config.task.adversarial_training.steps={t.steps} and "
            f"step_size={t.step_size} must be positive.")
  return None
