"""The device mesh of perceiver_jax.train.sharding on the eight fake CPU devices."""

import jax
import pytest
from jax.sharding import AxisType

from perceiver_jax.train.sharding import make_mesh


@pytest.mark.parametrize("data, fsdp, shape", [(-1, 1, (8, 1)), (2, 4, (2, 4)), (-1, 8, (1, 8))])
def test_mesh_holds_every_device_once_on_auto_axes(data, fsdp, shape):
  mesh = make_mesh(data, fsdp)
  assert mesh.axis_names == ("data", "fsdp")
  assert mesh.devices.shape == shape
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)


def test_mesh_over_given_devices_and_bad_sizes():
  assert make_mesh(devices=jax.devices()[:2]).devices.shape == (2, 1)
  with pytest.raises(ValueError, match="config.mesh.fsdp=3"):
    make_mesh(fsdp=3)
  with pytest.raises(ValueError, match=r"2 \* 2 must equal the 8 devices"):
    make_mesh(2, 2)
