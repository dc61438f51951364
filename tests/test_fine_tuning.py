"""From a transformers checkpoint to a fine-tuning run: `python -m perceiver_jax.convert`
writes a pretrained directory that `load_pretrained` loads with the converted outputs, and a
GLUE run (`configs/glue_bytes_perceiver_io.py:tiny`, TFDS mock data) started with
`config.init_from` takes the byte MLM's encoder and input adapter, weights included."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import tensorflow_datasets as tfds
import torch
import transformers

import transformers_parity
from configs import glue_bytes_perceiver_io
from perceiver_jax import convert, load_pretrained
from perceiver_jax.train import trainer
from perceiver_jax.train.experiment import build_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_convert_cli_then_fine_tune_glue_from_the_byte_mlm(tmp_path):
  run_config = glue_bytes_perceiver_io.get_config("tiny")
  torch.manual_seed(0)
  hf = transformers.PerceiverForMaskedLM(transformers.PerceiverConfig(
      num_latents=3, d_latents=24, d_model=8, num_blocks=1, num_self_attends_per_block=1,
      num_self_attention_heads=2, num_cross_attention_heads=1,
      max_position_embeddings=run_config.model.max_seq_len))
  checkpoint = transformers_parity.save(hf, tmp_path / "hf")
  output = str(tmp_path / "converted")
  result = subprocess.run(
      [sys.executable, "-m", "perceiver_jax.convert", "--transformers", checkpoint,
       "--output", output], cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "masked_language_modeling model" in result.stdout

  model, variables = load_pretrained(output)
  expected_model, expected = convert.from_transformers(checkpoint)
  ids = np.random.default_rng(0).integers(6, 262, (2, run_config.model.max_seq_len))
  np.testing.assert_array_equal(model.apply(variables, ids), expected_model.apply(expected, ids))

  run_config.init_from = output
  run_config.data.data_dir = str(tmp_path / "tfds")
  workdir = str(tmp_path / "glue")
  with tfds.testing.mock_data(num_examples=16):
    metrics = trainer.train_and_evaluate(run_config, workdir)
  assert np.isfinite(metrics["loss"])
  with open(os.path.join(workdir, "init_from.json")) as f:
    report = json.load(f)
  modules = {path.split("/")[1] for path in report["loaded"]}
  assert modules == {"encoder", "input_adapter"}
  assert "params/encoder/latents" in report["loaded"]
  assert {p.split("/")[1] for p in report["fresh"]} == {"decoder", "output_query"}
  assert any(p.startswith("params/output_query") for p in report["unused"])
  # The run's model is the MLM's encoder (its latents, exact GELU), not the tiny config's.
  experiment = build_experiment(run_config, workdir)
  assert experiment.config.model.encoder.num_latent_channels == 24
  assert experiment.config.model.encoder.activation == "gelu_exact"
  state, step = experiment.restore_or_init()
  experiment.checkpointer.close()
  assert step == run_config.num_train_steps
  trained = jax.device_get(state.params["encoder"]["latents"])
  np.testing.assert_allclose(trained, variables["params"]["encoder"]["latents"], atol=0.05)
  assert not np.array_equal(trained, variables["params"]["encoder"]["latents"])  # Trained.
