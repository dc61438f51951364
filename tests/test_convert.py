"""convert's reading of checkpoint directories: safetensors without torch, pytorch_model.bin
with it, and clear errors for directories that are not transformers Perceiver checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

import transformers_parity
from perceiver_jax import convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mlm():
  torch.manual_seed(0)
  return transformers.PerceiverForMaskedLM(transformers.PerceiverConfig(
      num_latents=3, d_latents=16, d_model=8, num_blocks=1, num_self_attends_per_block=1,
      num_self_attention_heads=2, num_cross_attention_heads=1,
      max_position_embeddings=6)).eval()


def test_pytorch_model_bin_converts_like_safetensors(tmp_path):
  """The older checkpoint format: the same weights pickled by torch.save."""
  hf = _mlm()
  path = transformers_parity.save(hf, tmp_path / "bin")
  with safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
    names = list(f.keys())
  os.remove(os.path.join(path, "model.safetensors"))
  state = hf.state_dict()
  torch.save({name: state[name] for name in names}, os.path.join(path, "pytorch_model.bin"))
  model, variables = convert.from_transformers(path)
  ids = np.random.default_rng(0).integers(6, 262, (2, 6))
  transformers_parity.assert_parity(model.apply(variables, ids),
                                    transformers_parity.run(hf, inputs=ids))


def test_safetensors_need_no_torch(tmp_path):
  path = transformers_parity.save(_mlm(), tmp_path / "safe")
  script = ("import sys; sys.modules['torch'] = None  # Any import of torch now fails.\n"
            "from perceiver_jax import convert\n"
            f"config, variables = convert.convert({path!r})\n"
            "print(config.task)")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().endswith("masked_language_modeling")


def test_directories_that_are_not_checkpoints_are_named(tmp_path):
  with pytest.raises(ValueError, match="is not a directory"):
    convert.convert(str(tmp_path / "missing"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match="has no config.json"):
    convert.convert(str(tmp_path / "empty"))
  path = transformers_parity.save(_mlm(), tmp_path / "model")
  os.remove(os.path.join(path, "model.safetensors"))
  with pytest.raises(ValueError, match="has no model.safetensors.*it holds \\['config.json'"):
    convert.convert(path)


def test_unknown_architectures_list_the_supported_heads(tmp_path):
  path = transformers_parity.save(_mlm(), tmp_path / "model")
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config["architectures"] = ["PerceiverModel"]
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match="'PerceiverModel'; perceiver_jax converts \\["
                                       "'PerceiverForImageClassificationConvProcessing'"):
    convert.convert(path)
  assert len(convert.CONVERTERS) == 7


def _checkpoint(directory, config="{}", **arrays):
  """A directory with `config` as config.json and `arrays` (default one small weight) in
  model.safetensors."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(directory)
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write(config)
  save_file(arrays or {"w": np.ones((2, 3), np.float32)},
            os.path.join(directory, "model.safetensors"))
  return str(directory)


@pytest.mark.parametrize("text, message", [("{", "config.json' is not valid JSON"),
                                           ("[1, 2]", "config.json' holds a JSON list; expected"
                                                      " an object")])
def test_bad_config_files_are_named(tmp_path, text, message):
  with pytest.raises(ValueError, match=message):
    convert.convert(_checkpoint(tmp_path / "model", config=text))


def test_truncated_safetensors_are_named(tmp_path):
  path = _checkpoint(tmp_path / "model")
  file = os.path.join(path, "model.safetensors")
  with open(file, "r+b") as f:
    f.truncate(os.path.getsize(file) - 8)
  with pytest.raises(ValueError, match="model.safetensors' is not a readable safetensors file "
                                       "\\(truncated or corrupt\\?\\)"):
    convert.convert(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(tmp_path, value):
  weight = np.ones((2, 3), np.float32)
  weight[1, 2] = value
  path = _checkpoint(tmp_path / "model", w=np.ones(2, np.float32), bad=weight)
  with pytest.raises(ValueError, match="model.safetensors': weight 'bad' holds NaN or infinite"):
    convert.convert(path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/elsewhere.safetensors"])
def test_a_shard_index_naming_a_file_outside_the_directory_is_refused(tmp_path, shard):
  path = _checkpoint(tmp_path / "model")
  os.rename(os.path.join(path, "model.safetensors"), tmp_path / "outside.safetensors")
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {"w": shard}}, f)
  with pytest.raises(ValueError, match=f"names the shard '{shard}', which is not a file in the "
                                       "checkpoint directory .*; refusing to read it"):
    convert.convert(path)


def test_a_pickle_that_weights_only_refuses_gets_our_message(tmp_path):
  path = _checkpoint(tmp_path / "model")
  os.remove(os.path.join(path, "model.safetensors"))
  torch.save({"w": torch.ones(2), "hook": os.getcwd}, os.path.join(path, "pytorch_model.bin"))
  with pytest.raises(ValueError) as error:
    convert.convert(path)
  assert "pytorch_model.bin' holds objects other than tensors" in str(error.value)
  assert error.value.__cause__ is None and error.value.__suppress_context__
  assert "weights_only=False" not in str(error.value)
