"""What every experiment config shares: the training defaults and the option syntax.

`get_config()` holds every top-level training field but `model` and `num_train_steps` (no
default fits every experiment): each configs/X.py starts from it and overrides what its recipe
changes; `tiny_run` shrinks a run to the tests' size. A config file's `get_config(arg)` takes
comma-separated options the big_vision way (`parse_options`), in any order and at most one from
each of its OPTIONS groups, the first of a group being its default:
`configs/imagenet_perceiver_io.py:conv,tiny` is the 'conv' model at the test size.
"""

import types

import ml_collections

from perceiver_jax.data import data_config
from perceiver_jax.train import optim

SIZES = ("full", "tiny")  # 'tiny': a test-size model trained for a few steps.


def get_config() -> ml_collections.ConfigDict:
  """The training defaults; the comments say what each field does."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Initialisation, data order and every random draw derive from (seed, step).
  c.init_from = ml_collections.config_dict.placeholder(str)  # Pretrained model dir (fine-tune).
  # With init_from: modules (paths without the collection, e.g. 'decoder/output') whose arrays
  # may start fresh when their shapes differ from the checkpoint's; any other such array stops.
  c.init_fresh = ()
  c.batch_size = 64  # Global: split over every device.
  c.eval_batch_size = 64
  c.grad_accum_steps = 1  # An update sums the gradients of this many micro-batches.
  c.log_every_steps = 100
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  c.checkpoint = dict(keep=2, best_metric="accuracy", best_mode="max", async_save=True)
  c.mesh = dict(data=-1, fsdp=1, min_fsdp_size=2 ** 10)  # Smaller params stay replicated.
  c.data = data_config.default_config()
  c.optimizer = optim.default_config()
  c.label_smoothing = 0.0  # Classification.
  c.mixup = dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5)  # Alphas 0: off.
  c.mlm = dict(mask_prob=0.15)  # Masked language modelling: the share of bytes masked.
  c.z_loss = 0.0  # Language modelling: adds z_loss * logsumexp(logits)^2 to the loss.
  # Language modelling: 0, or crop each training row's context to a random length in
  # [minimum_crop_length, max_context] (left-padded), as the Perceiver AR paper trains.
  c.lm = dict(minimum_crop_length=0)
  # Multimodal autoencoding: training decodes only this many random pixels / audio patches per
  # step (0: all of them); evaluation decodes all.
  c.autoencoding = dict(image_points=0, audio_patches=0)
  # Optical flow: 0, or decode only this many random pixels per example in training.
  c.flow = dict(train_points=0)
  return c


def tiny_run(config):
  """Shrinks `config`'s run to 2 steps of 16 examples (the tests' size)."""
  config.data.shuffle_buffer = 64
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, 1)
  config.batch_size, config.eval_batch_size = 16, 16
  config.num_train_steps, config.log_every_steps = 2, 1
  config.eval_every_steps, config.checkpoint_every_steps = 2, 2


def parse_options(arg: str, groups: dict) -> types.SimpleNamespace:
  """The choice of each group (name -> choices, the first the default) that `arg` makes.

  `arg` is comma-separated, e.g. 'conv,tiny'; ValueError for an option of no group (listing the
  valid ones) and for two options of one group.
  """
  chosen = {}
  for option in filter(None, (part.strip() for part in (arg or "").split(","))):
    group = next((name for name, choices in groups.items() if option in choices), None)
    if group is None:
      valid = ", ".join(f"{name}: {'|'.join(choices)}" for name, choices in groups.items())
      raise ValueError(f"unknown config option {option!r}; the options ({valid}) are "
                       "comma-separated, at most one of each group.")
    if group in chosen:
      raise ValueError(f"config options {chosen[group]!r} and {option!r} both choose the "
                       f"{group}; give one of {groups[group]}.")
    chosen[group] = option
  return types.SimpleNamespace(**{name: chosen.get(name, choices[0])
                                  for name, choices in groups.items()})

