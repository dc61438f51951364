"""TFDS builders that ship with perceiver_jax; importing this package registers them.

`OFFLINE_BUILDERS` names the ones whose `download_and_prepare` needs no network, so the input
pipeline builds them on first use.
"""

from perceiver_jax.data.datasets.digits import SklearnDigits
from perceiver_jax.data.datasets.kinetics700_av import Kinetics700Av
from perceiver_jax.data.datasets.modelnet40 import Modelnet40
from perceiver_jax.data.datasets.mpi_sintel import MpiSintel
from perceiver_jax.data.datasets.python_stdlib_text import PythonStdlibText
from perceiver_jax.data.datasets.synthetic_audio import SyntheticAudio
from perceiver_jax.data.datasets.synthetic_av import SyntheticAv
from perceiver_jax.data.datasets.synthetic_flow import SyntheticFlow
from perceiver_jax.data.datasets.synthetic_signals import SyntheticSignals
from perceiver_jax.data.datasets.synthetic_solids import SyntheticSolids

OFFLINE_BUILDERS = frozenset({"python_stdlib_text", "sklearn_digits", "synthetic_solids",
                              "synthetic_audio", "synthetic_av", "synthetic_flow",
                              "synthetic_signals"})
