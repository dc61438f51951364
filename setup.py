"""perceiver_jax: Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen."""

import setuptools

# Versions known to work together (tested on CPU with Python 3.11).
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "numpy>=1.26",
    # Input pipelines and logging; TensorFlow is only used on the CPU.
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "importlib-resources==7.1.0",  # TFDS needs it to build datasets.
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
    "safetensors==0.8.0",  # Reading transformers checkpoints (perceiver_jax.convert).
    "scipy==1.17.1",  # The offline synthetic_flow / synthetic_solids builders.
]
# `make demo`: the offline digits dataset and the plots of runs (experiments/plot.py).
DEMO = [
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
]
# The PyTorch models that conversions are checked against and benchmarks compare with; torch
# also reads pytorch_model.bin checkpoints. torch 2.13.0 is the CPU build that pip finds on the
# project's CI machines.
PEERS = [
    "torch==2.13.0",
    "transformers==5.23.0",
    "perceiver-pytorch==0.11.0",  # lucidrains' Perceiver (python -m experiments.benchmark --peers).
    "einops==0.8.2",  # perceiver-pytorch needs it.
]
TEST = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "chex==0.1.92",  # Pytree assertions.
    # Executing notebooks/quickstart.ipynb.
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
] + DEMO + PEERS

setuptools.setup(
    # The import name is perceiver_jax; the unrelated package `perceiver-jax` on PyPI has the
    # distribution name.
    name="perceiver-flax-research",
    version="0.1.0",
    description="Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen.",
    packages=setuptools.find_packages(include=["perceiver_jax", "perceiver_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"demo": DEMO, "peers": PEERS, "test": TEST},
)
