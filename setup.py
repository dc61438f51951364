"""perceiver_jax: Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen."""

import setuptools

# Versions known to work together (tested on CPU with Python 3.11).
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "ml-collections==1.1.0",
    "numpy>=1.26",
]
EXAMPLES = [
    "absl-py==2.5.1",
    "scikit-learn==1.9.1",
]
TEST = EXAMPLES + [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
]

setuptools.setup(
    name="perceiver_jax",
    version="0.1.0",
    description="Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen.",
    packages=setuptools.find_packages(include=["perceiver_jax", "perceiver_jax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"examples": EXAMPLES, "test": TEST},
)
