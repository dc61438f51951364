"""TFDS builders that ship with perceiver_jax; importing this package registers them.

`OFFLINE_BUILDERS` names the ones whose `download_and_prepare` needs no network, so the input
pipeline builds them on first use.
"""

from perceiver_jax.data.datasets.digits import SklearnDigits
from perceiver_jax.data.datasets.python_stdlib_text import PythonStdlibText
from perceiver_jax.data.datasets.synthetic_signals import SyntheticSignals

OFFLINE_BUILDERS = frozenset({"python_stdlib_text", "sklearn_digits"})
OFFLINE_BUILDERS |= {"synthetic_signals"}
