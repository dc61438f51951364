"""A config whose data does not fit its model stops before anything compiles, with an error
naming the fields on both sides (experiment.validate_config, experiment.check_batch, and the
trainer's first train and eval batches)."""

import numpy as np
import pytest

from configs import digits_perceiver, mlm_bytes_perceiver_io
from perceiver_jax.train import experiment, trainer


def _digits(data_dir=None):
  config = digits_perceiver.get_config("tiny")
  config.data.data_dir = data_dir
  return config


def _digit_batch(shape=(8, 8, 1), size=4):
  return {"image": np.zeros((size,) + shape, np.float32), "label": np.zeros(size, np.int32),
          "mask": np.ones(size, np.float32)}


def test_a_data_task_the_model_does_not_read_names_both_fields():
  config = _digits()
  config.data.task = "text_mlm"
  with pytest.raises(ValueError, match=r"config.data.task='text_mlm' does not feed "
                     r"config.model.task='perceiver_classification'.*'image_classification'"):
    experiment.validate_config(config)


def test_every_model_task_names_the_data_tasks_it_reads():
  from perceiver_jax import tasks  # pylint: disable=import-outside-toplevel
  assert set(experiment.DATA_TASKS) == set(tasks.TASKS)
  assert set(experiment.INPUT_SHAPE_FIELDS) == set(tasks.TASKS)


def test_a_batch_of_the_models_shapes_passes():
  experiment.check_batch(_digits(), _digit_batch())


def test_a_batch_of_other_shapes_names_the_models_shape_field():
  with pytest.raises(ValueError, match=r"inputs \(8, 8, 3\).*config.model.input_shape "
                     r"declare\(s\) inputs \(8, 8, 1\)"):
    experiment.check_batch(_digits(), _digit_batch((8, 8, 3)))


def test_a_batch_without_the_models_input_names_its_keys():
  config = mlm_bytes_perceiver_io.get_config("tiny")
  with pytest.raises(ValueError, match=r"keys \['image', 'label', 'mask'\] but "
                     r"config.model.task='masked_language_modeling' reads 'ids'"):
    experiment.check_batch(config, _digit_batch())


def test_text_rows_longer_than_the_model_name_max_seq_len():
  config = mlm_bytes_perceiver_io.get_config("tiny")
  ids = np.ones((2, config.model.max_seq_len + 8), np.int32)
  with pytest.raises(ValueError, match=r"config.model.max_seq_len"):
    experiment.check_batch(config, {"ids": ids, "mask": np.ones(2, np.float32)})


def test_the_trainer_stops_before_the_first_step(digits_data_dir, tmp_path):
  config = _digits(digits_data_dir)
  config.model.input_shape = (8, 8, 3)  # The digits are grey: [8, 8, 1].
  with pytest.raises(ValueError, match="config.model.input_shape"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())
