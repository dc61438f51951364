"""The train and eval steps on a TrainState (train_state.py), compiled with jit over a mesh.

`train_step(state, batch) -> (state, metrics)`: prepare -> model -> score (see objectives.py)
over `grad_accum_steps` equal micro-batches (a lax.scan; gradients are summed and divided by
the total weight, so they equal the big batch's), then the optax update. Metrics are
device scalars: loss, accuracy..., grad_norm, learning_rate, weight (examples or tokens).
`eval_step(state, batch) -> metric sums` (loss_sum, weight, ...) to be added over batches.
Both are jitted with the state's shardings and the batch split over the mesh; the train step
donates the state. On a mesh of several CPU devices, `jit_steps` waits for the previous step's
metrics before dispatching the next (at most one step queued behind the running one): XLA:CPU
runs each device's collectives on host threads, and a loop that dispatches steps without ever
waiting on them can deadlock in an all-reduce ("rendezvous ... only 1 of them arrived"). GPU and
TPU steps stay fully asynchronous.
"""

from typing import Callable, List

import jax
import jax.numpy as jnp
import optax

from perceiver_jax.train.objectives import Objective
from perceiver_jax.train.sharding import batch_sharding, replicated, state_shardings
from perceiver_jax.train.train_state import TrainState

STEP_KEY_EVAL = 7  # fold_in constant for evaluation randomness (MLM masking).


def _apply(model, params, batch_stats, inputs, kwargs, rng, train):
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  rngs = {"dropout": jax.random.fold_in(rng, 1), "masking": jax.random.fold_in(rng, 2)}
  if batch_stats and train:
    out, updates = model.apply(variables, inputs, deterministic=False, rngs=rngs,
                               mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]
  return model.apply(variables, inputs, deterministic=not train, rngs=rngs, **kwargs), batch_stats


def make_train_step(model, tx: optax.GradientTransformation, objective: Objective,
                    schedule: Callable, grad_accum_steps: int = 1):
  """The un-jitted train step; see the module docstring."""

  def micro_loss(params, batch_stats, micro, rng):
    inputs, kwargs, targets = objective.prepare(micro, jax.random.fold_in(rng, 3), True)
    out, new_stats = _apply(model, params, batch_stats, inputs, kwargs, rng, True)
    loss_sum, weight, metric_sums = objective.score(out, targets)
    return loss_sum, (weight, metric_sums, new_stats)

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    params, batch_stats = state.params, state.batch_stats
    if grad_accum_steps == 1:
      (loss_sum, aux), grads = jax.value_and_grad(micro_loss, has_aux=True)(
          params, batch_stats, batch, rng)
      weight, metric_sums, batch_stats = aux
    else:  # Not optax.MultiSteps: it averages per-micro-batch means, not sum / total weight.
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape((grad_accum_steps, x.shape[0] // grad_accum_steps) + x.shape[1:]),
          batch)

      def body(carry, inputs):
        grads, loss_sum, weight, metric_sums, stats = carry
        index, micro_batch = inputs
        (l, (w, m, stats)), g = jax.value_and_grad(micro_loss, has_aux=True)(
            params, stats, micro_batch, jax.random.fold_in(rng, index))
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
        return (add(grads, g), loss_sum + l, weight + w, add(metric_sums, m), stats), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      _, (_, metric_shapes, _) = jax.eval_shape(micro_loss, params, batch_stats, first, rng)
      metric_zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
      carry = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), metric_zeros,
               batch_stats)
      (grads, loss_sum, weight, metric_sums, batch_stats), _ = jax.lax.scan(
          body, carry, (jnp.arange(grad_accum_steps), micro))
    denominator = jnp.maximum(weight, 1e-8)
    grads = jax.tree_util.tree_map(lambda g: g / denominator, grads)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(params, updates),
                              opt_state=opt_state, batch_stats=batch_stats)
    metrics = {name: value / denominator for name, value in metric_sums.items()}
    metrics.update(loss=loss_sum / denominator, grad_norm=optax.tree.norm(grads),
                   learning_rate=schedule(state.step), weight=weight)
    return new_state, metrics

  return step


def make_eval_step(model, objective: Objective):
  """The un-jitted eval step: metric sums over one batch (padding has weight 0)."""

  def step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, STEP_KEY_EVAL)
    inputs, kwargs, targets = objective.prepare(batch, rng, False)
    out, _ = _apply(model, state.params, state.batch_stats, inputs, kwargs, rng, False)
    loss_sum, weight, metric_sums = objective.score(out, targets)
    return dict(metric_sums, loss=loss_sum, weight=weight)

  return step


class _WaitForPrevious:
  """A jitted step that waits for the previous call's metrics (of any step sharing `pending`)
  before it dispatches; other attributes (lower, trace...) are the jitted function's."""

  def __init__(self, jitted, metrics_of: Callable, pending: List):
    self._jitted, self._metrics_of, self._pending = jitted, metrics_of, pending

  def __call__(self, *args, **kwargs):
    if self._pending:
      jax.block_until_ready(self._pending.pop())
    out = self._jitted(*args, **kwargs)
    self._pending.append(self._metrics_of(out))  # Not the state: the next step donates it.
    return out

  def __getattr__(self, name):
    return getattr(self._jitted, name)


def jit_steps(train_step, eval_step, mesh, abstract_state, fsdp: bool, min_fsdp_size: int):
  """(jitted train step, jitted eval step, state shardings) for `mesh`; on several CPU devices
  each call first waits for the previous one (see the module docstring)."""
  shardings = state_shardings(mesh, abstract_state, fsdp, min_fsdp_size)
  batch = batch_sharding(mesh)
  train = jax.jit(train_step, in_shardings=(shardings, batch),
                  out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
  evaluate = jax.jit(eval_step, in_shardings=(shardings, batch), out_shardings=replicated(mesh))
  if mesh.size > 1 and all(device.platform == "cpu" for device in mesh.devices.flat):
    pending = []
    train = _WaitForPrevious(train, lambda out: out[1], pending)
    evaluate = _WaitForPrevious(evaluate, lambda out: out, pending)
  return train, evaluate, shardings
