"""Flags and process setup shared by the launchers (train, eval, plot, sample).

--config=configs/X.py[:options] with --config.field=value overrides (ml_collections
config_flags; train needs it; eval, plot and sample read the config the run saved in its
workdir, `run_config`, and apply explicit overrides on top), --workdir, and the multi-process
flags: on TPU pods and SLURM/Kubernetes GPU clusters `jax.distributed.initialize()` finds its
peers itself (--distributed); elsewhere give --coordinator_address, --num_processes and
--process_id. On CPU a run splits its batch over one JAX device per core (--cpu_devices,
experiments/cpu_devices.py).
"""

import logging as python_logging

from absl import flags, logging
import jax
from ml_collections import config_flags

from configs import common
from experiments import cpu_devices
from perceiver_jax.train import run_config
from perceiver_jax.train.experiment import sharded_batch_sizes, validate_config

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cpu_devices)  # --help lists --cpu_devices.
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/X.py[:options]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and TensorBoard.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.mark_flags_as_required(["workdir"])


class _QuietLibraries(python_logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS (one line per save / file), JAX's backend probe
  ("Unable to initialize backend 'tpu'" where there is none; the launcher logs the backend it
  uses) and Orbax's warning for saves without metrics (by design: only evaluated steps compete
  for the best); other warnings stay."""

  def filter(self, record):
    noisy = any(part in record.pathname
                for part in ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge.py"))
    if noisy and "did not provide metrics" in record.getMessage():
      return False
    return record.levelno >= python_logging.WARNING or not noisy


def saved_run_config():
  """The config of the run in --workdir (eval, plot, sample): the one it saved, with the
  explicit --config.x=y overrides on top; --config when the run saved none
  (`run_config.resolve`)."""
  overrides = config_flags.get_override_values(FLAGS["config"]) if FLAGS.config is not None else {}
  return run_config.resolve(FLAGS.workdir, FLAGS.config, overrides,
                            defaults=common.get_config())


def setup_processes(config=None):
  """Checks the fields of `config` (default --config; a missing one is named), sets the CPU
  device count (--cpu_devices), joins the other processes of a multi-process run (no-op for a
  single process) and keeps library INFO logs off the console."""
  config = FLAGS.config if config is None else config
  validate_config(config)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  cpu_devices.configure(
      FLAGS.cpu_devices, sharded_batch_sizes(config),
      multi_process=FLAGS.coordinator_address is not None or FLAGS.distributed)
  if FLAGS.coordinator_address is not None:
    # Cross-process collectives for CPU devices (GPUs and TPUs have their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("Process %d of %d; %d local / %d global devices (%s).", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
