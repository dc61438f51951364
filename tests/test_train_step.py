"""The public jitted steps (train_step.jit_steps) under a loop that never waits on them."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NEVER_WAITING_LOOP = textwrap.dedent("""
    import sys
    import numpy as np
    from configs import digits_perceiver
    from perceiver_jax.train.experiment import build_experiment
    from perceiver_jax.train.sharding import global_batch

    config = digits_perceiver.get_config("tiny")
    config.mesh.data, config.batch_size = 2, 8
    experiment = build_experiment(config, sys.argv[1])
    batch = {"image": np.zeros((8, 8, 8, 1), np.float32), "label": np.zeros(8, np.int32),
             "mask": np.ones(8, np.float32)}
    state, history = experiment.init(), []
    for _ in range(20):  # Never blocks, as a notebook loop that only keeps the metrics.
      state, metrics = experiment.train_step(state, global_batch(batch, experiment.mesh))
      history.append(metrics)
    print("bounded", all(m["loss"].is_ready() for m in history[:-1]))
    print("loss", float(history[-1]["loss"]))
""")


def test_a_loop_that_never_waits_on_the_train_step_finishes_on_two_cpu_devices(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2 "
             "--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _NEVER_WAITING_LOOP, str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  # Each call waited for the previous step, so at most the last one was still in flight.
  assert "bounded True" in result.stdout, result.stdout
  assert "loss " in result.stdout
