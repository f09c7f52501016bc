"""Mutation testing of the core: does the test suite catch the bugs that matter?

Each mutation below is a deliberate bug of a kind that silently spoils results (data
order, masks, reductions, resume state, optimizer masks, target shifts, random keys,
metric directions). For each, a copy of the working tree gets the bug, the tests named
with it run there (`pytest -x`), and the bug counts as killed when they fail. The working
tree itself is never touched.

    python bench/mutations.py                 # all of them (about 20-30 minutes on 2 cores)
    python bench/mutations.py --only lm_eval_target,l2_on_biases
    python bench/mutations.py --list

Why a list and not mutmut or cosmic-ray: those generate thousands of syntactic mutants
(`+` to `-`, `<` to `<=`) and re-run the whole suite for each; with JAX compile times
that is days on this machine, and most mutants are either caught by any test or are
equivalent. A curated list of the bugs that really happen in training code, each with
the few tests that should catch it, runs in half an hour and says what matters.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str            # file, relative to the repository
  old: str             # text replaced (must occur exactly once)
  new: str
  tests: tuple[str, ...]
  what: str


MUTATIONS = [
    Mutation("resume_drops_log_window", "practice_jax/train.py",
             'window, epoch_sums = meta.get("window"), meta.get("epoch_sums")',
             'window, epoch_sums = None, meta.get("epoch_sums")',
             ("tests/test_train.py::test_a_run_writes_its_results_and_resumes_exactly",),
             "a resumed run forgets the half-full logging window"),
    Mutation("resume_drops_epoch_sums", "practice_jax/train.py",
             'window, epoch_sums = meta.get("window"), meta.get("epoch_sums")',
             'window, epoch_sums = meta.get("window"), None',
             ("tests/test_train.py::test_a_run_writes_its_results_and_resumes_exactly",),
             "a resumed run forgets the epoch's train sums"),
    Mutation("resume_keeps_stale_metrics", "practice_jax/train.py",
             "    writers.truncate_metrics(workdir, step if",
             "    (lambda *args: None)(workdir, step if",
             ("tests/test_train.py::test_a_run_writes_its_results_and_resumes_exactly",),
             "records past the checkpoint are not dropped on resume"),
    Mutation("lm_eval_target", "practice_jax/tasks/language_model.py",
             "logits, targets = self.logits(state, tokens[:, :-1]), tokens[:, 1:]",
             "logits, targets = self.logits(state, tokens[:, :-1]), tokens[:, :-1]",
             ("tests/test_steps.py", "tests/test_language_model.py"),
             "evaluation predicts the current character instead of the next"),
    Mutation("lm_train_target", "practice_jax/tasks/language_model.py",
             'inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]',
             'inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, :-1]',
             ("tests/test_steps.py", "tests/test_language_model.py"),
             "training predicts the current character instead of the next"),
    Mutation("lm_eval_mask", "practice_jax/tasks/language_model.py",
             'return self._sums(logits, targets, losses, batch["mask"])',
             'return self._sums(logits, targets, losses, jnp.ones_like(batch["mask"]))',
             ("tests/test_steps.py",),
             "language-model evaluation counts the padding windows"),
    Mutation("classification_eval_mask", "practice_jax/tasks/classification.py",
             'return self._sums(logits, batch["label"], losses, batch["mask"])',
             'return self._sums(logits, batch["label"], losses, jnp.ones_like(batch["mask"]))',
             ("tests/test_steps.py",), "classification evaluation counts the padding"),
    Mutation("no_gradient_average_under_pmap", "practice_jax/optim.py",
             "      grads = jax.lax.pmean(grads, axis)", "      grads = grads",
             ("tests/test_parallel.py",), "pmap mode trains each device on its own gradient"),
    Mutation("no_metric_sum_under_pmap", "practice_jax/parallel.py",
             "        sums = jax.lax.psum(sums, DEVICE_AXIS)", "        sums = sums",
             ("tests/test_parallel.py",), "pmap mode reports one device's metrics"),
    Mutation("dropout_per_device_draw", "practice_jax/models/layers.py",
             "  axis = device_axis()\n  if axis is None:", "  axis = device_axis()\n  if True:",
             ("tests/test_parallel.py",), "pmap devices draw the same dropout mask rows"),
    Mutation("l2_on_biases", "practice_jax/optim.py",
             "parts.append(optax.add_decayed_weights(opt.l2, mask))",
             "parts.append(optax.add_decayed_weights(opt.l2))",
             ("tests/test_optim.py",), "the L2 penalty also shrinks biases and norm scales"),
    Mutation("weight_decay_on_biases", "practice_jax/optim.py",
             "parts.append(optax.add_decayed_weights(opt.weight_decay, mask))",
             "parts.append(optax.add_decayed_weights(opt.weight_decay))",
             ("tests/test_optim.py",), "weight decay also shrinks biases and norm scales"),
    Mutation("frozen_parameters_train", "practice_jax/optim.py",
             '"frozen": optax.set_to_zero()', '"frozen": optax.identity()',
             ("tests/test_optim.py",), "frozen parameters are updated"),
    Mutation("frozen_batch_stats_update", "practice_jax/optim.py",
             "  if not opt.freeze:\n    return new\n  return {", "  if True:\n    return new\n  return {",
             ("tests/test_optim.py",), "a frozen layer's batch-norm statistics still move"),
    Mutation("same_order_every_epoch", "practice_jax/data/in_memory.py",
             "return _permutation(jax.random.fold_in(data_key, epoch), num_examples)",
             "return _permutation(data_key, num_examples)",
             ("tests/test_data.py", "tests/test_steps.py"), "every epoch sees the same order"),
    Mutation("streaming_same_order_every_epoch", "practice_jax/data/streaming.py",
             "np.random.default_rng([self.seed, epoch])", "np.random.default_rng([self.seed])",
             ("tests/test_seam.py",), "streamed epochs all see the same order"),
    Mutation("same_randomness_every_step", "practice_jax/state.py",
             "return jax.random.fold_in(self.key, self.step)", "return self.key",
             ("tests/test_steps.py",), "dropout and augmentation repeat at every step"),
    Mutation("label_smoothing_ignored", "practice_jax/tasks/classification.py",
             "self.config.task.label_smoothing)", "0.0)",
             ("tests/test_steps.py",), "label smoothing is configured but never applied"),
    Mutation("augmentation_at_evaluation", "practice_jax/tasks/classification.py",
             '    logits = self.logits(state, batch["image"])\n',
             '    logits = self.logits(state, augment.augment(jax.random.key(0), batch["image"], '
             '4, True))\n',
             ("tests/test_catalogue.py::test_augmentation_never_happens_at_evaluation",),
             "evaluation sees augmented images"),
    Mutation("early_stopping_wrong_direction", "practice_jax/train.py",
             "sign = 1.0 if self.higher_is_better else -1.0", "sign = 1.0",
             ("tests/test_catalogue.py",), "a lower-is-better metric is maximised"),
    Mutation("eval_padding_unmasked", "practice_jax/tasks/base.py",
             'out["mask"] = (np.arange(padded) < n).astype(np.float32)',
             'out["mask"] = np.ones(padded, np.float32)',
             ("tests/test_steps.py", "tests/test_data.py"), "padding examples count in evaluation"),
]


def run(mutation: Mutation | None, python: str, tests: tuple[str, ...] = ()
        ) -> tuple[bool, float]:
  """(tests failed, seconds) with the mutation applied in a copy of the tree (None: the
  control, unmutated, running `tests`)."""
  with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
    copy = Path(tmp) / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-*", "runs", "__pycache__", ".pytest_cache", "*.egg-info"))
    if mutation is not None:
      target = copy / mutation.path
      text = target.read_text()
      if text.count(mutation.old) != 1:
        raise ValueError(f"the text to mutate occurs {text.count(mutation.old)} times in "
                         f"{mutation.path}; update bench/mutations.py")
      target.write_text(text.replace(mutation.old, mutation.new))
      tests = mutation.tests
    env = {**os.environ, "PYTHONPATH": str(copy)}   # the copy shadows the installed package
    start = time.perf_counter()
    result = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             *tests], cwd=copy, env=env, capture_output=True, text=True)
    return result.returncode != 0, time.perf_counter() - start


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", default="", help="comma-separated mutation names")
  parser.add_argument("--list", action="store_true", help="list the mutations and exit")
  args = parser.parse_args()
  chosen = [m for m in MUTATIONS if not args.only or m.name in args.only.split(",")]
  if args.list:
    for m in chosen:
      print(f"{m.name:34s} {m.what}  [{' '.join(m.tests)}]")
    return 0
  # The control: without any mutation every test named below passes, so a failure
  # under a mutation is that mutation's doing.
  control = tuple(sorted({t for m in chosen for t in m.tests}))
  failed, seconds = run(None, sys.executable, control)
  print(f"{'FAILED  ' if failed else 'passed  '} {'control (no mutation)':34s} {seconds:6.0f} s",
        flush=True)
  if failed:
    print("the tests fail without any mutation: fix them first")
    return 2
  killed = 0
  for m in chosen:
    try:
      caught, seconds = run(m, sys.executable)
    except ValueError as e:
      print(f"STALE    {m.name:34s} {e}", flush=True)
      continue
    killed += caught
    print(f"{'killed  ' if caught else 'SURVIVED'} {m.name:34s} {seconds:6.0f} s  {m.what}",
          flush=True)
  print(f"{killed}/{len(chosen)} mutations killed")
  return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
  sys.exit(main())
