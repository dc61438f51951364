"""Test setup: eight fake CPU devices, so sharding tests run on one CPU."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
