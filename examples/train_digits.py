"""Train a small Perceiver on the handwritten digits that scikit-learn ships (offline).

The 1,797 8x8 images become [batch, 8, 8, 1] inputs; the Perceiver concatenates 2-D Fourier
features, cross-attends with 32 latents and classifies by mean-pooling the latents. A fixed
split keeps 360 images for testing. Writes `metrics.jsonl` (one JSON object per epoch) to
--workdir and prints test accuracy.

  python -m examples.train_digits --workdir=workdirs/digits [--dtype=bfloat16]
"""

import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

from perceiver_jax import Perceiver, PerceiverEncoder, ProjectionDecoder
from perceiver_jax.model_stats import count_params

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdirs/digits", "Where metrics.jsonl is written.")
flags.DEFINE_integer("epochs", 60, "Passes over the 1,437 training images.")
flags.DEFINE_integer("batch_size", 64, "Examples per step.")
flags.DEFINE_float("learning_rate", 2e-3, "Peak AdamW learning rate (warm-up then cosine).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype; params stay f32.")
flags.DEFINE_integer("seed", 0, "Seed for the split, init and shuffling.")


def load_digits(seed):
  """Train/test arrays: images [n, 8, 8, 1] in [0, 1], labels [n]; 360 test images."""
  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  order = np.random.default_rng(seed).permutation(len(images))
  test, train = order[:360], order[360:]
  return (images[train], digits.target[train]), (images[test], digits.target[test])


def build_model(dtype):
  encoder = PerceiverEncoder(
      num_latents=32, num_latent_channels=64, num_cross_attention_layers=1,
      num_self_attention_blocks=2, num_self_attention_layers_per_block=2,
      num_self_attention_heads=4, cross_attention_widening_factor=2,
      self_attention_widening_factor=2, dropout_rate=0.1, dtype=dtype)
  return Perceiver(encoder, ProjectionDecoder(10, dtype=dtype), num_frequency_bands=8)


def main(argv):
  del argv
  (x_train, y_train), (x_test, y_test) = load_digits(FLAGS.seed)
  model = build_model(jnp.dtype(FLAGS.dtype))
  rng = jax.random.PRNGKey(FLAGS.seed)
  params = jax.jit(model.init)(rng, jnp.asarray(x_train[:1]))["params"]
  steps_per_epoch = len(x_train) // FLAGS.batch_size
  total_steps = FLAGS.epochs * steps_per_epoch
  schedule = optax.warmup_cosine_decay_schedule(0.0, FLAGS.learning_rate, steps_per_epoch,
                                                total_steps)
  optimizer = optax.adamw(schedule, weight_decay=1e-4)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, images, labels, step_rng):
    def loss_fn(params):
      logits = model.apply({"params": params}, images, deterministic=False,
                           rngs={"dropout": step_rng})
      return optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def accuracy(params, images, labels):
    logits = model.apply({"params": params}, images)
    return jnp.mean(jnp.argmax(logits, -1) == labels)

  os.makedirs(FLAGS.workdir, exist_ok=True)
  print(f"Perceiver with {count_params(params):,} parameters; {len(x_train)} train / "
        f"{len(x_test)} test digits; {total_steps} steps of {FLAGS.batch_size}.")
  shuffle = np.random.default_rng(FLAGS.seed)
  start = time.time()
  with open(os.path.join(FLAGS.workdir, "metrics.jsonl"), "w") as metrics:
    for epoch in range(1, FLAGS.epochs + 1):
      order = shuffle.permutation(len(x_train))
      losses = []
      for i in range(steps_per_epoch):
        batch = order[i * FLAGS.batch_size:(i + 1) * FLAGS.batch_size]
        rng, step_rng = jax.random.split(rng)
        params, opt_state, loss = train_step(params, opt_state, x_train[batch], y_train[batch],
                                             step_rng)
        losses.append(loss)
      test_accuracy = float(accuracy(params, x_test, y_test))
      record = {"epoch": epoch, "step": epoch * steps_per_epoch,
                "loss": float(np.mean(jax.device_get(losses))), "test_accuracy": test_accuracy,
                "seconds": round(time.time() - start, 1)}
      metrics.write(json.dumps(record) + "\n")
      if epoch % 10 == 0 or epoch == FLAGS.epochs:
        print(json.dumps(record), flush=True)
  print(f"Test accuracy {test_accuracy:.2%} after {time.time() - start:.0f} s.")


if __name__ == "__main__":
  app.run(main)
