"""Look inside a trained run: what it gets wrong, what its first layer looks for, what
its layers see, which pixels decide, where its attention goes.

    python -m practice_jax.inspect WORKDIR --what=errors        [--split=test] [--n=36]
    python -m practice_jax.inspect WORKDIR --what=filters
    python -m practice_jax.inspect WORKDIR --what=feature_maps  [--input=IMAGE | --index=K]
    python -m practice_jax.inspect WORKDIR --what=saliency      [--input=IMAGE ...] [--n=6]
    python -m practice_jax.inspect WORKDIR --what=attention     [--prompt=TEXT | --input=FILE]

Nothing is trained: the run's checkpoint is restored (train.load_trained; the one it
reported, or --checkpoint=best|last) and its model applied as the task applies it (the
task's own preprocessing: the training set's channel statistics). The PNG goes to
WORKDIR/inside/<what>.png, or to --out (a folder); `practice report` shows the pictures
of WORKDIR/inside/ with the run.

- errors (image classifiers): the N examples of --split the model got wrong with the
  highest confidence, with true and predicted class and the predicted probability.
- filters (CNNs): the first convolution's kernels as a grid of tiles.
- feature_maps (CNNs): the output of every convolution (Flax capture_intermediates) for
  one input: --input=IMAGE, else example --index of --split; the most active channels.
- saliency (image classifiers): the gradient of the predicted class's logit with
  respect to the input pixels (vanilla), and SmoothGrad (Smilkov et al. 2017: the same
  gradient averaged over --samples copies with Gaussian noise of --noise times the pixel
  range), for the --input images or the first N examples of --split.
- attention (the GPT language model): the attention weights of every layer and head
  for --prompt (or the text of --input), rebuilt from the captured query/key projections
  exactly as jax.nn.dot_product_attention weighs them (causal, scaled by 1/sqrt(head dim)).

Each says in one sentence when it does not apply to the run (filters of an MLP,
attention of a CNN, errors of a language model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from practice_jax.errors import UserError

WHAT = ("errors", "filters", "feature_maps", "saliency", "attention")
DEFAULT_N = {"errors": 36, "saliency": 6}
FOLDER = "inside"


# ------------------------------------------------------------------------ the pieces

def _image_classifier(exp, workdir: str, what: str):
  from practice_jax.tasks.classification import ClassificationTask
  task = exp.task
  if not isinstance(task, ClassificationTask) or exp.config.data.name == "csv":
    raise UserError(f"--what={what} applies to image classifiers; {workdir} holds a "
                    f"{exp.config.model.name} {exp.config.task.name} run on "
                    f"{exp.config.data.name}.")
  return task


def first_conv_kernel(params) -> tuple[str, np.ndarray] | None:
  """(path, kernel [kh, kw, in, out]) of the first convolution in `params` (creation
  order), or None for a model without one."""
  from flax import traverse_util
  for path, value in traverse_util.flatten_dict(dict(params)).items():
    if path[-1] == "kernel" and np.ndim(value) == 4:
      return "/".join(path[:-1]), np.asarray(value)
  return None


def _is_conv(module) -> bool:
  import flax.linen as nn

  from practice_jax.models import conv
  return isinstance(module, (nn.Conv, conv.Conv))


def conv_activations(task, state, images) -> list[tuple[str, np.ndarray]]:
  """[(module path, output [n, h, w, c])] of every convolution for `images` (uint8),
  in the order they ran, from Flax's capture_intermediates."""
  from flax import traverse_util
  import jax
  is_conv = lambda module, method: method == "__call__" and _is_conv(module)  # noqa: E731

  @jax.jit
  def outputs(params, model_state, images):
    _, captured = task.model.apply({"params": params, **model_state},
                                   task.preprocess(images), train=False,
                                   mutable=["intermediates"], capture_intermediates=is_conv)
    return captured.get("intermediates", {})

  flat = traverse_util.flatten_dict(dict(outputs(state.params, state.model_state, images)))
  return [("/".join(p[:-1]), np.asarray(v[0])) for p, v in flat.items()]


def _saliency_fn(task, samples: int):
  """The compiled per-image saliency of `task`'s model (one per task and sample count)."""
  import jax
  import jax.numpy as jnp
  cache = task.__dict__.setdefault("_inspect_saliency", {})
  if samples in cache:
    return cache[samples]

  def logits_of(state, pixels):
    return task._apply(state.params, state.model_state, task.standardise(pixels[None]),
                       train=False)[0][0]

  grad = jax.grad(lambda pixels, state, cls: logits_of(state, pixels)[cls])

  @jax.jit
  def one(state, pixels, key, noise):
    logits = logits_of(state, pixels)
    cls = jnp.argmax(logits)
    vanilla = grad(pixels, state, cls)
    noisy = pixels + noise * jax.random.normal(key, (samples,) + pixels.shape)
    smooth = jax.vmap(grad, in_axes=(0, None, None))(noisy, state, cls).mean(0)
    return (cls, jax.nn.softmax(logits)[cls], jnp.abs(vanilla).max(-1),
            jnp.abs(smooth).max(-1))

  cache[samples] = one
  return one


def saliency_maps(task, state, images: np.ndarray, samples: int = 25, noise: float = 0.15,
                  seed: int = 0):
  """(predicted class, its probability, |vanilla gradient|, |SmoothGrad|) per image: the
  gradient of the predicted class's logit with respect to the pixels in [0, 1], its
  magnitude's maximum over colour channels; SmoothGrad averages the gradient over
  `samples` copies with N(0, noise^2) added (pixel range 1)."""
  import jax
  import jax.numpy as jnp
  one = _saliency_fn(task, samples)
  pixels = task.pixels(jnp.asarray(images))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(images))
  out = [one(state, p, k, jnp.float32(noise)) for p, k in zip(pixels, keys)]
  return tuple(np.stack([np.asarray(o[i]) for o in out]) for i in range(4))


def attention_weights(task, state, tokens: np.ndarray) -> np.ndarray:
  """[layers, heads, t, t] attention weights of the GPT for `tokens` [t]: the query and
  key projections of every layer (its 'qkv' Dense's outputs, captured) weighed as
  jax.nn.dot_product_attention does (causal softmax of q.k / sqrt(head dim))."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  from practice_jax.models.gpt import CausalSelfAttention
  heads = task.config.model.num_heads
  is_qkv = (lambda m, method: method == "__call__" and m.name == "qkv"
            and isinstance(m.parent, CausalSelfAttention))

  @jax.jit
  def weights(params, tokens):
    _, captured = task.model.apply({"params": params}, tokens[None], train=False,
                                   mutable=["intermediates"], capture_intermediates=is_qkv)
    out = []
    for _, (qkv,) in traverse_util.flatten_dict(dict(captured["intermediates"])).items():
      b, t, c3 = qkv.shape                   # one per layer, in order
      q, k, _ = jnp.split(qkv.reshape(b, t, heads * 3, c3 // (3 * heads)), 3, axis=2)
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
      causal = jnp.tril(jnp.ones((t, t), bool))
      out.append(jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)[0])
    return jnp.stack(out)

  return np.asarray(weights(state.params, jnp.asarray(tokens)))


def classify_split(exp, state, split: str):
  """(images, labels, probabilities) of every example of `split`."""
  import jax

  from practice_jax.tasks.base import pad_for_eval
  data = exp.source.eval_splits[split]
  task, batch_size = exp.task, exp.config.eval_batch_size
  padded = exp.parallel.replicate(pad_for_eval(data, batch_size))
  predict = exp.parallel.compile_predict(task.logits, batch_size, task.INPUT)
  n = len(data["label"])
  logits = np.asarray(jax.device_get(predict(state, padded)))[:n]
  return data[task.INPUT], np.asarray(data["label"]), np.asarray(jax.nn.softmax(logits, -1))


def read_inputs(task, paths: list[str], dataset: str) -> np.ndarray:
  """Image files as the model takes them (predict.py's framing for another size)."""
  from practice_jax.data.images import read_image
  from practice_jax.predict import to_model_input
  shape = tuple(task.image_shape)
  images = []
  for path in paths:
    image = read_image(path, shape[-1])
    images.append(to_model_input(image, shape, "auto", image.shape[:2] != shape[:2], path,
                                 dataset)[0])
  return np.stack(images)


# ----------------------------------------------------------------------- the commands

def _split(exp, split: str, workdir: str):
  splits = exp.source.eval_splits
  if split not in splits:
    raise UserError(f"{workdir}'s data has no split {split!r}; use --split= one of "
                    f"{', '.join(sorted(splits)) or '(none)'}.")
  return splits[split]


def do_errors(exp, state, args, path: str) -> str:
  from practice_jax.reporting import inside
  task = _image_classifier(exp, args.workdir, "errors")
  _split(exp, args.split, args.workdir)
  images, labels, probs = classify_split(exp, state, args.split)
  predicted = probs.argmax(-1)
  wrong = np.flatnonzero(predicted != labels)
  if not len(wrong):
    return f"The model got every one of the {len(labels)} {args.split} examples right."
  order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:args.n]
  names = task.class_names
  inside.errors(images[order], [names[i] for i in labels[order]],
                [names[i] for i in predicted[order]], probs[order, predicted[order]], path,
                f"{task.title()}: the {len(order)} most confident of {len(wrong)} errors "
                f"in {len(labels)} {args.split} examples")
  top = ", ".join(f"#{i} {names[labels[i]]}->{names[predicted[i]]} "
                  f"{probs[i, predicted[i]]:.0%}" for i in order[:5])
  return (f"{len(wrong)} of {len(labels)} {args.split} examples wrong "
          f"({len(wrong) / len(labels):.2%}); the most confident: {top}.")


def do_filters(exp, state, args, path: str) -> str:
  from practice_jax.reporting import inside
  found = first_conv_kernel(state.params)
  if found is None:
    raise UserError(f"--what=filters needs a convolutional model; {args.workdir}'s "
                    f"{exp.config.model.name} has no convolution layer.")
  name, kernel = found
  inside.filters(kernel, path, f"{exp.task.title()}: first convolution ({name}), "
                 f"{kernel.shape[3]} kernels of {kernel.shape[0]}x{kernel.shape[1]}x"
                 f"{kernel.shape[2]}")
  return f"{kernel.shape[3]} kernels of {name} ({'x'.join(map(str, kernel.shape[:3]))})."


def _one_input(exp, args) -> tuple[np.ndarray, str]:
  if args.input:
    return read_inputs(exp.task, args.input[:1], exp.config.data.name), args.input[0]
  data = _split(exp, args.split, args.workdir)
  i = args.index
  if not 0 <= i < len(data["label"]):
    raise UserError(f"--index={i} is outside the {len(data['label'])} {args.split} "
                    f"examples.")
  label = exp.task.class_names[int(data["label"][i])]
  return np.asarray(data[exp.task.INPUT][i:i + 1]), f"{args.split} #{i} ({label})"


def do_feature_maps(exp, state, args, path: str) -> str:
  from practice_jax.reporting import inside
  task = _image_classifier(exp, args.workdir, "feature_maps")
  if first_conv_kernel(state.params) is None:
    raise UserError(f"--what=feature_maps needs a convolutional model; {args.workdir}'s "
                    f"{exp.config.model.name} has no convolution layer.")
  image, what = _one_input(exp, args)
  layers = [(name, act[0]) for name, act in conv_activations(task, state, image)]
  inside.feature_maps(image[0], layers, path, f"{task.title()}: conv outputs for {what} "
                      f"(most active channels)")
  return f"{len(layers)} conv layers for {what}: " + ", ".join(
      f"{n} {'x'.join(map(str, a.shape))}" for n, a in layers) + "."


def do_saliency(exp, state, args, path: str) -> str:
  from practice_jax.reporting import inside
  task = _image_classifier(exp, args.workdir, "saliency")
  if args.input:
    images = read_inputs(task, args.input, exp.config.data.name)
    names = [os.path.basename(p) for p in args.input]
  else:
    data = _split(exp, args.split, args.workdir)
    images = np.asarray(data[task.INPUT][:args.n])
    names = [f"#{i} {task.class_names[int(c)]}" for i, c in enumerate(data["label"][:args.n])]
  cls, prob, vanilla, smooth = saliency_maps(task, state, images, args.samples, args.noise)
  captions = [f"{n}\npred {task.class_names[int(c)]} {p:.0%}"
              for n, c, p in zip(names, cls, prob)]
  inside.saliency(images, vanilla, smooth, captions, path,
                  f"{task.title()}: saliency of the predicted class (SmoothGrad: "
                  f"{args.samples} copies, noise {args.noise:g})")
  return f"saliency of {len(images)} images: " + "; ".join(c.replace("\n", " ")
                                                           for c in captions) + "."


def do_attention(exp, state, args, path: str) -> str:
  from practice_jax.reporting import inside
  if exp.config.model.name != "gpt":
    raise UserError(f"--what=attention applies to the GPT language model (models/gpt.py); "
                    f"{args.workdir} holds a {exp.config.model.name} "
                    f"{exp.config.task.name} run.")
  task = exp.task
  text = args.prompt
  if args.input:
    with open(args.input[0], encoding="utf-8") as f:
      text = f.read()
  text = text[-task.block_size:]
  unknown = sorted(set(text) - set(task.vocab.chars))
  if not text or unknown:
    raise UserError(f"The prompt {'is empty' if not text else 'has characters the model never saw: ' + repr(''.join(unknown))}; give one of its vocabulary's characters.")
  weights = attention_weights(task, state, np.asarray(task.vocab.encode(text), np.int32))
  inside.attention(weights, list(text), path, f"{task.title()}: attention for {text!r}"
                   if len(text) <= 40 else f"{task.title()}: attention, {len(text)} chars")
  strongest = weights[-1, :, -1].argmax(-1)
  return (f"{weights.shape[0]} layers x {weights.shape[1]} heads over {len(text)} "
          f"characters; the last character attends most to: " + ", ".join(
              f"head {h} {text[j]!r}@{j}" for h, j in enumerate(strongest)) + " (last layer).")


COMMANDS = {"errors": do_errors, "filters": do_filters, "feature_maps": do_feature_maps,
            "saliency": do_saliency, "attention": do_attention}
NEEDS_DATA = {"errors": True, "filters": False, "attention": False}


def _refusal(config, what: str, workdir: str) -> str | None:
  """The sentence refusing `what` for the run of `config`, decided before anything is
  loaded (filters are decided from the parameters)."""
  model, task, data = config.model.name, config.task.name, config.data.name
  if what == "attention" and model != "gpt":
    return (f"--what=attention applies to the GPT language model (models/gpt.py); "
            f"{workdir} holds a {model} {task} run.")
  if what in ("errors", "saliency", "feature_maps") and (task != "classification"
                                                         or data == "csv"):
    return (f"--what={what} applies to image classifiers; {workdir} holds a {model} "
            f"{task} run on {data}.")
  return None


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m practice_jax.inspect", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("workdir")
  parser.add_argument("--what", required=True, choices=WHAT)
  parser.add_argument("--split", default="test", help="the examples (default test)")
  parser.add_argument("--n", type=int, default=None,
                      help="how many examples (errors: 36, saliency: 6)")
  parser.add_argument("--input", nargs="+", default=None,
                      help="image file(s) instead of the split's examples (a text file "
                           "for attention)")
  parser.add_argument("--index", type=int, default=0,
                      help="feature_maps: which example of --split (default 0)")
  parser.add_argument("--prompt", default="ROMEO:\nBut soft, what light",
                      help="attention: the text")
  parser.add_argument("--samples", type=int, default=25, help="SmoothGrad's noisy copies")
  parser.add_argument("--noise", type=float, default=0.15,
                      help="SmoothGrad's noise, a fraction of the pixel range")
  parser.add_argument("--checkpoint", choices=("best", "last"), default=None)
  parser.add_argument("--out", default=None,
                      help="folder for the PNG (default WORKDIR/inside)")
  return parser


def run(argv: list[str]) -> str:
  """Runs the command; returns what to print. Raises UserError in one sentence."""
  args = parse(argv)
  if not os.path.isdir(args.workdir):
    raise UserError(f"{args.workdir} is not a directory.")
  from practice_jax import train
  from practice_jax import workdir as workdir_lib
  config = workdir_lib.load_config(args.workdir)
  refusal = _refusal(config, args.what, args.workdir)
  if refusal:
    raise UserError(refusal)
  needs_data = NEEDS_DATA.get(args.what, not args.input)
  exp, state, step, which = train.load_trained(args.workdir, args.checkpoint,
                                               with_data=needs_data)
  said, path = picture(exp, state, args)
  if path:
    said += f"\nWritten: {path} ({which} checkpoint, step {step})"
  return said


def parse(argv: list[str]) -> argparse.Namespace:
  args = _parser().parse_args(argv)
  args.n = args.n if args.n is not None else DEFAULT_N.get(args.what, 6)
  if args.n < 1 or args.samples < 1 or args.noise < 0:
    raise UserError("--n and --samples must be at least 1 and --noise at least 0.")
  return args


def picture(exp, state, args: argparse.Namespace) -> tuple[str, str | None]:
  """Draws args.what for a loaded run: (what to print, the PNG's path or None)."""
  folder = args.out or os.path.join(args.workdir, FOLDER)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{args.what}.png")
  if os.path.isfile(path):
    os.remove(path)                  # never leave an older picture for this run's
  said = COMMANDS[args.what](exp, state, args, path)
  return said, path if os.path.isfile(path) else None


def main(argv: list[str] | None = None) -> int:
  start = time.perf_counter()
  try:
    print(run(sys.argv[1:] if argv is None else argv))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"({time.perf_counter() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  from practice_jax import quiet
  quiet.install()   # before TensorFlow or XLA load
  sys.exit(main())
