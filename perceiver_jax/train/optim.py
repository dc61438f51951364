"""Optimiser and learning-rate schedule from the `config.optimizer` section (optax).

The update of a gradient pytree (the params' shapes) is computed in this order:
global-norm clipping -> AdamW / LAMB / SGD-with-momentum moments -> decoupled weight decay
(masked off `bias` and normalisation `scale` leaves) -> LAMB trust ratio (per leaf) ->
learning rate (the schedule, returned too so the trainer can log it).

Schedules, optax's joined (peak = `learning_rate`, T = num_train_steps, W = `warmup_steps`;
during the first W steps every schedule is the linear warm-up peak * step / W, 0 at step 0):
- 'constant': peak.
- 'warmup_cosine': cosine from peak at W to `end_learning_rate_factor` * peak at T.
- 'constant_cosine': peak until floor(`constant_fraction` * T), then cosine to the end value
  at T (the Perceiver IO ImageNet recipe: LAMB, peak 2e-3, weight decay 0.1, eps 1e-6).
- 'step': peak * `decay_factor` ** (number of boundaries passed), boundaries at
  floor(f * T) for f in `decay_boundaries` (the Perceiver recipe: LAMB, peak 4e-3, factor
  0.1 at epochs 84, 102 and 114 of 120, i.e. (0.7, 0.85, 0.95)).
SGD's weight decay is decoupled too: it is added after the momentum, scaled by the rate.
"""

import math
import numbers
from typing import Tuple

import jax
import ml_collections
import optax

NAMES = ("adamw", "lamb", "sgd")
SCHEDULES = ("constant", "warmup_cosine", "constant_cosine", "step")
# Leaf names that are never decayed: biases, and LayerNorm / BatchNorm scales.
NO_DECAY_LEAF_NAMES = ("bias", "scale")


def default_config() -> ml_collections.ConfigDict:
  """The optimizer section with every key: AdamW, warm-up + cosine, no clipping."""
  c = ml_collections.ConfigDict()
  c.name = "adamw"
  c.learning_rate = 1e-3
  c.b1, c.b2, c.eps = 0.9, 0.999, 1e-8
  c.weight_decay = 1e-4
  c.momentum = 0.9
  c.schedule = "warmup_cosine"
  c.warmup_steps = 0
  c.end_learning_rate_factor = 0.0
  c.constant_fraction = 0.5
  c.decay_boundaries = (0.7, 0.85, 0.95)
  c.decay_factor = 0.1
  c.clip_norm = ml_collections.config_dict.placeholder(float)
  return c


def _error(key, requirement, value):
  return ValueError(f"config.optimizer.{key} must be {requirement}, got {value!r}.")


def _check_real(cfg, key, low, high, low_open=False, high_open=True):
  """Raises unless cfg[key] is a real number (not NaN) in the interval [low, high) (or as
  opened)."""
  value = cfg[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
    raise _error(key, "a number", value)
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise _error(key, f"in {interval}", value)


def _check_choice(cfg, key, choices):
  if cfg[key] not in choices:
    raise _error(key, f"one of {choices}", cfg[key])


def _boundary_steps(cfg, num_train_steps):
  """The absolute steps at which the 'step' schedule decays."""
  fractions = cfg["decay_boundaries"]
  if isinstance(fractions, (str, bytes)) or not hasattr(fractions, "__len__"):
    raise _error("decay_boundaries", "a sequence of fractions of num_train_steps", fractions)
  for f in fractions:
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 < f < 1.0:
      raise _error("decay_boundaries", "fractions in (0, 1), e.g. (0.7, 0.85, 0.95)", fractions)
  if list(fractions) != sorted(set(fractions)):
    raise _error("decay_boundaries", "strictly increasing", fractions)
  return [int(f * num_train_steps) for f in fractions]


def check_config(opt_config, num_train_steps):
  """Checks every key of the section and how they fit num_train_steps (ValueError naming the
  first bad one); returns the section as a dict."""
  if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, numbers.Integral) \
      or num_train_steps < 1:
    raise ValueError(f"num_train_steps must be an int >= 1, got {num_train_steps!r}.")
  expected, given = set(default_config().keys()), set(opt_config.keys())
  if given - expected:
    raise ValueError(f"config.optimizer has unknown keys {sorted(given - expected)}; the keys "
                     f"are {sorted(expected)} (see perceiver_jax.train.optim.default_config()).")
  if expected - given:
    raise ValueError(f"config.optimizer lacks keys {sorted(expected - given)}; start from "
                     "perceiver_jax.train.optim.default_config().")
  cfg = {key: opt_config[key] for key in expected}
  _check_choice(cfg, "name", NAMES)
  _check_choice(cfg, "schedule", SCHEDULES)
  _check_real(cfg, "learning_rate", 0.0, float("inf"), low_open=True)
  for key in ("b1", "b2", "momentum"):
    _check_real(cfg, key, 0.0, 1.0)
  _check_real(cfg, "eps", 0.0, float("inf"), low_open=True)
  _check_real(cfg, "weight_decay", 0.0, float("inf"))
  _check_real(cfg, "end_learning_rate_factor", 0.0, 1.0, high_open=False)
  _check_real(cfg, "constant_fraction", 0.0, 1.0)
  _check_real(cfg, "decay_factor", 0.0, 1.0, low_open=True, high_open=False)
  if cfg["clip_norm"] is not None:
    _check_real(cfg, "clip_norm", float("-inf"), float("inf"))
  warmup = cfg["warmup_steps"]
  if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 0:
    raise _error("warmup_steps", "an int >= 0", warmup)
  if warmup >= num_train_steps:
    raise _error("warmup_steps", f"< num_train_steps = {num_train_steps}", warmup)
  boundaries = _boundary_steps(cfg, num_train_steps)
  constant_steps = int(cfg["constant_fraction"] * num_train_steps)
  if cfg["schedule"] == "constant_cosine" and warmup > constant_steps:
    raise _error("warmup_steps", f"<= constant_fraction * num_train_steps = {constant_steps} "
                 "(warm up inside the constant phase)", warmup)
  if cfg["schedule"] == "step" and boundaries and warmup > boundaries[0]:
    raise _error("warmup_steps", f"<= the first decay boundary, step {boundaries[0]}", warmup)
  return cfg


def _schedule(cfg, num_train_steps: int) -> optax.Schedule:
  """The learning rate as a function of the step (optax schedules); see the module docstring."""
  peak, kind, warmup = float(cfg["learning_rate"]), cfg["schedule"], cfg["warmup_steps"]
  end = float(cfg["end_learning_rate_factor"]) * peak
  if kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, num_train_steps, end)
  pieces = [(warmup, optax.constant_schedule(peak))]  # (first step, schedule from there).
  if kind == "constant_cosine":
    flat_end = int(cfg["constant_fraction"] * num_train_steps)
    pieces.append((flat_end, optax.cosine_decay_schedule(peak, num_train_steps - flat_end,
                                                         alpha=end / peak)))
  elif kind == "step":
    factor = float(cfg["decay_factor"])
    pieces += [(boundary, optax.constant_schedule(peak * factor ** (i + 1)))
               for i, boundary in enumerate(_boundary_steps(cfg, num_train_steps))]
  if warmup:
    pieces.insert(0, (0, optax.linear_schedule(0.0, peak, warmup)))
  starts, schedules = zip(*pieces)
  return optax.join_schedules(schedules, starts[1:])


def weight_decay_mask(params):
  """True for leaves that are decayed: all but those named `bias` or `scale`.

  A leaf's name is its last dict key, so boxed params (nn.Partitioned) are named too.
  """
  def decayed(path, _):
    keys = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
    return not keys or keys[-1] not in NO_DECAY_LEAF_NAMES
  return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(opt_config, num_train_steps: int
                   ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, learning-rate schedule) for `opt_config`; see the module docstring."""
  cfg = check_config(opt_config, num_train_steps)
  schedule = _schedule(cfg, num_train_steps)
  b1, b2, eps, decay = (float(cfg[k]) for k in ("b1", "b2", "eps", "weight_decay"))
  if cfg["name"] == "adamw":
    optimizer = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=decay,
                            mask=weight_decay_mask)
  elif cfg["name"] == "lamb":
    optimizer = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=decay,
                           mask=weight_decay_mask)
  else:
    optimizer = optax.chain(
        optax.trace(decay=float(cfg["momentum"]), nesterov=False),
        optax.add_decayed_weights(decay, mask=weight_decay_mask),
        optax.scale_by_learning_rate(schedule))
  clip = cfg["clip_norm"]
  if clip is not None and clip > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(float(clip)), optimizer)
  return optimizer, schedule
