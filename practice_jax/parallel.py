"""Compiling the pure step functions for all devices of all processes: the one place
that knows how the work is laid out.

Two modes compile the same train step (``config.parallel.mode``):

- ``'jit'`` (default): one program over a device Mesh with axes ('data', 'fsdp'). Each
  batch is sharded over all devices; XLA inserts the gradient and metric all-reduces
  itself (batch norm statistics are computed over the global batch). The state is
  replicated, except that with an 'fsdp' axis larger than 1 every state array of at least
  ``fsdp_min_size`` elements is split over that axis along its largest dimension divisible
  by the axis size (parameters and optimizer moments alike); XLA gathers them where used.
- ``'pmap'``: the classic ``jax.pmap`` over the devices (one process only) under the axis
  name ``models.layers.DEVICE_AXIS``. Tasks do not see it: the optimizer averages the
  gradients over it (optim.py), batch norm and random draws synchronise over it
  (models/layers.py), and the metric sums are added over it here. Kept for comparison and
  for code written that way; 'jit' is the faster default (pmap broadcasts the state to the
  devices at every dispatch).

Several train steps run per dispatch, with the metrics summed on the device, so the host
wakes up once per chunk: a ``lax.scan`` over the chunk's batches, or the steps unrolled
when the caller asks (``unroll``: the loop asks on CPU for models that declare
``CPU_UNROLL``, since XLA:CPU runs convolutions inside a while loop ~20x slower: MNIST
CNN 1.5 vs 34 steps/s; the scan compiles in constant time and is as fast for the others:
GPT-cpu config, 10-step chunk, 22.7 steps/s in the loop vs 21.0 unrolled, compiled in
3.9 s vs 24.5 s).

Data: sources hand over this process's rows of each batch (``local_batches`` is the
sharding of device-resident ones); with several processes the global batches are
assembled from every process's part with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from practice_jax.models.layers import DEVICE_AXIS

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
MODES = ("jit", "pmap")


def mesh_shape(requested: tuple[int, int], num_devices: int) -> tuple[int, int] | None:
  """(data, fsdp) for `num_devices`, one entry may be -1 ("the rest"); None if impossible."""
  data, fsdp = requested
  if data == -1 and fsdp > 0 and num_devices % fsdp == 0:
    data = num_devices // fsdp
  elif fsdp == -1 and data > 0 and num_devices % data == 0:
    fsdp = num_devices // data
  return (data, fsdp) if data > 0 and fsdp > 0 and data * fsdp == num_devices else None


class DataParallel:

  def __init__(self, devices: list | None = None, mode: str = "jit",
               mesh: tuple[int, int] = (-1, 1), fsdp_min_size: int = 2 ** 18):
    self.devices = list(devices if devices is not None else jax.devices())
    self.mode = mode
    self.on_cpu = self.devices[0].platform == "cpu"
    shape = mesh_shape(tuple(mesh), len(self.devices))
    if shape is None:
      raise ValueError(f"mesh {tuple(mesh)} does not fit {len(self.devices)} devices")
    self.mesh = Mesh(np.asarray(self.devices).reshape(shape), BATCH_AXES)
    self.fsdp_size, self.fsdp_min_size = shape[1], fsdp_min_size
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharded = NamedSharding(self.mesh, P(BATCH_AXES))
    self.process_index, self.process_count = jax.process_index(), jax.process_count()
    self.local_devices = [d for d in self.mesh.devices.flat
                          if d.process_index == self.process_index]
    if self.process_count == 1:
      self._local_mesh, self._local_axes = self.mesh, BATCH_AXES
    else:
      # This process's devices, in mesh order: its rows of every global batch.
      self._local_mesh = Mesh(np.asarray(self.local_devices), ("local",))
      self._local_axes = "local"
    self._global_batches = NamedSharding(self.mesh, P(None, BATCH_AXES))
    # Where device-resident sources put this process's rows of a chunk [steps, batch].
    self.local_batches = NamedSharding(self._local_mesh, P(None, self._local_axes))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def is_main(self) -> bool:
    """Whether this process writes logs, reports and plots (checkpoints: all together)."""
    return is_main_process()

  def replicate(self, tree: Any) -> Any:
    """The same value on every device (every process must pass the same value)."""
    return jax.device_put(tree, self.replicated)

  def put_local(self, tree: Any) -> Any:
    """This process's own data (its shard of the training set), on its own devices."""
    return jax.device_put(tree, NamedSharding(self._local_mesh, P()))

  def state_sharding(self, state: Any) -> Any:
    """Replicated, or with an fsdp axis: each large array split over it (see above)."""
    def rule(x):
      if self.fsdp_size == 1 or x.size < self.fsdp_min_size:
        return self.replicated
      dims = [d for d in np.argsort(x.shape)[::-1] if x.shape[d] % self.fsdp_size == 0]
      if not dims:
        return self.replicated
      spec = [None] * x.ndim
      spec[dims[0]] = FSDP_AXIS
      return NamedSharding(self.mesh, P(*spec))
    return jax.tree.map(rule, state)

  def put_state(self, state: Any) -> Any:
    """The train state on the devices with its sharding."""
    state = jax.device_get(state) if self.process_count > 1 else state
    return jax.device_put(state, self.state_sharding(state))

  def _finite(self, state: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

  def compile_train_chunk(self, train_step: Callable, batch_size: int,
                          unroll: bool = False) -> Callable:
    """fn(state, local_batches, num_steps) -> (state, summed metrics, whether every
    floating-point array of the state is finite).

    Runs `num_steps` consecutive train steps on `local_batches` (this process's rows,
    [num_steps, batch_size / processes, ...]; an empty dict for tasks that make their own
    data); compiled once per distinct `num_steps`. `unroll` unrolls the steps instead of
    scanning them (CPU only; the function's `unrolled` says whether it does). In 'jit'
    mode the input state is donated.
    """
    unroll = unroll and self.on_cpu
    # Jitted once so that Python traces the step once: jit's trace cache serves the
    # metrics' structure, the scan's body (or every unrolled step) and the FLOP count
    # (`run.traced`, lowered on demand); each was a whole trace of the model before
    # (~0.5 s apiece for the char GPT, more for every unrolled step).
    traced = {}

    def chunk_of(step):
      def chunk(state, batches, num_steps):
        def body(carry, batch):
          state, sums = carry
          state, metrics = step(state, batch)
          return (state, jax.tree.map(jnp.add, sums, metrics)), None

        first = jax.tree.map(lambda a: a[0], batches)
        traced["step"] = step.trace(state, first)
        zeros = _zeros_like(traced["step"].out_info[1])
        if unroll:
          carry = (state, zeros)
          for i in range(num_steps):
            carry, _ = body(carry, jax.tree.map(lambda a, i=i: a[i], batches))
          state, sums = carry
        else:
          (state, sums), _ = jax.lax.scan(body, (state, zeros), batches, length=num_steps)
        if self.mode == "pmap":
          sums = jax.lax.psum(sums, DEVICE_AXIS)
        return state, sums, self._finite(state)
      return chunk

    if self.mode == "pmap":
      chunk = chunk_of(jax.jit(train_step))
      per_device = batch_size // self.num_devices
      # [steps, batch] -> [devices, steps, batch/device], each device's rows on it.
      split = jax.jit(lambda b: jax.tree.map(lambda a: jnp.swapaxes(a.reshape(
          (a.shape[0], -1, per_device) + a.shape[2:]), 0, 1), b),
          out_shardings=NamedSharding(self._local_mesh, P(self._local_axes)))
      compiled = {}

      def run(state, batches, num_steps):
        if num_steps not in compiled:
          compiled[num_steps] = jax.pmap(
              lambda s, b: chunk(s, b, num_steps), axis_name=DEVICE_AXIS,
              in_axes=(None, 0), out_axes=None, devices=self.devices)
        state, sums, finite = compiled[num_steps](state, split(batches))
        return self.put_state(state), sums, finite
      run.unrolled = unroll
      run.traced = lambda: None    # traced per device: the FLOP count traces the global step
      return run

    compile_chunk, compiled = self._chunk_compiler(chunk_of, train_step), {}

    def train_on(state, batches, num_steps):
      """The steps on given global batches [steps, batch, ...] (benchmarks use it to
      time the steps without the input pipeline)."""
      if num_steps not in compiled:
        compiled[num_steps] = compile_chunk(state, batches, num_steps)
      return compiled[num_steps](state, batches)

    def run(state, batches, num_steps):
      return train_on(state, self.global_batches(batches, batch_size), num_steps)

    run.train_on = train_on
    run.unrolled = unroll      # what the loop's chunk_end needs to know
    run.traced = lambda: traced.get("step")   # one train step as the chunk traced it
    run._cache_size = lambda: len(compiled)
    run.compiler_options = compile_chunk.options    # None, or conv.NO_YNN_CONVOLUTIONS
    return run

  def _chunk_compiler(self, chunk_of: Callable, train_step: Callable) -> Callable:
    """compile(state, batches, num_steps): chunk_of(jitted step) compiled (jit mode). The
    step is jitted once and traced once, for every num_steps (jit's trace cache). On CPU
    it is traced under conv.no_ynn_convolutions and, when its convolutions all took the
    "eigen" or "im2col" lowering, every chunk is compiled without YNNPACK's
    convolutions; when some are left to YNNPACK it is traced again as it is."""
    from practice_jax.models import conv
    chosen = {}      # "step": the jitted train step, "options": the compiler options

    def compile_chunk(state, batches, num_steps):
      def trace(step):
        return jax.jit(chunk_of(step), donate_argnums=0, static_argnames="num_steps",
                       out_shardings=(self.state_sharding(state), self.replicated,
                                      self.replicated)).trace(state, batches,
                                                              num_steps=num_steps)
      if not chosen and self.on_cpu:
        step = jax.jit(lambda state, batch: train_step(state, batch))   # its own trace
        with conv.no_ynn_convolutions() as record:
          traced = trace(step)
        if not (record["eigen"] and record["ynn"]):
          chosen.update(step=step, options=conv.NO_YNN_CONVOLUTIONS if record["eigen"]
                        else None)
          return traced.lower().compile(chosen["options"])
      if not chosen:
        chosen.update(step=jax.jit(train_step), options=None)
      return trace(chosen["step"]).lower().compile(chosen["options"])
    compile_chunk.options = lambda: chosen.get("options")
    return compile_chunk

  def global_batches(self, batches: Any, batch_size: int) -> Any:
    """This process's rows of a chunk's batches [steps, local batch, ...] as global
    arrays [steps, batch_size, ...] sharded over the mesh."""
    if self.process_count > 1:
      shape = jax.tree.map(lambda a: (a.shape[0], batch_size) + a.shape[2:], batches)
      return jax.make_array_from_process_local_data(self._global_batches, batches, shape)
    return jax.device_put(batches, self._global_batches)

  def compile_eval(self, eval_step: Callable, batch_size: int) -> Callable:
    """fn(state, padded_split) -> summed metrics over the whole split, in one dispatch."""
    def evaluate(state, split):
      batches = _in_batches(split, batch_size)

      def body(sums, batch):
        batch = jax.lax.with_sharding_constraint(batch, self.batch_sharded)
        metrics = eval_step(state, batch)
        return jax.tree.map(jnp.add, sums, metrics), None

      first = jax.tree.map(lambda a: a[0], batches)
      zeros = _zeros_like(jax.eval_shape(eval_step, state, first))
      return jax.lax.scan(body, zeros, batches)[0]

    return jax.jit(evaluate, out_shardings=self.replicated)

  def compile_predict(self, predict: Callable, batch_size: int, field: str = "image"
                      ) -> Callable:
    """fn(state, padded_split) -> predict(state, inputs) for every example, stacked, where
    the inputs are the split's `field`."""
    def run(state, split):
      images = _in_batches(split, batch_size)[field]

      def body(_, batch):
        batch = jax.lax.with_sharding_constraint(batch, self.batch_sharded)
        return None, predict(state, batch)

      outputs = jax.lax.scan(body, None, images)[1]
      return outputs.reshape((-1,) + outputs.shape[2:])

    return jax.jit(run, out_shardings=self.replicated)


def _in_batches(split: dict[str, Any], batch_size: int) -> dict[str, Any]:
  """A padded split reshaped to [num_batches, batch_size, ...] for a scan over batches."""
  num_batches = split["mask"].shape[0] // batch_size
  return jax.tree.map(lambda a: a.reshape((num_batches, batch_size) + a.shape[1:]), split)


def _zeros_like(shapes: Any) -> Any:
  """Zeros for a tree of ShapeDtypeStructs: the start of a metric sum."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def is_main_process() -> bool:
  """Whether this process writes files: only process 0 of a multi-process run does."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits for every process of a multi-process run (e.g. until process 0 has done its
  file work); nothing with one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
