"""Install mtl_keras: ``pip install -e .[dev]``."""

from setuptools import find_packages, setup

setup(
    name="mtl_keras",
    version="0.1.0",
    description="Meta-transfer learning (Sun et al., CVPR 2019) for Keras 3 on TensorFlow or JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mtl_keras", "mtl_keras.*", "mtl_keras_app", "mtl_keras_app.*"]),
    package_data={"mtl_keras": ["data/sources/*.json", "data/sources/*.txt"]},
    install_requires=[
        "tensorflow>=2.21,<2.23",  # tested with 2.21 (keras_private relies on its hooks)
        "keras>=3.15,<4",  # tested with 3.15; the overridden _maybe_symbolic_build is newer than 3.3
        "numpy>=1.26",
        "matplotlib>=3.7",  # the embedded glyph datasets are drawn from its fonts; the app's figures
        "pillow>=9",
        # not the library's: the mtl-keras command (installed with it) writes TensorBoard logs by
        # default, and TensorFlow 2.21 no longer brings TensorBoard along
        "tensorboard>=2.16",
    ],
    extras_require={
        # the application's extra: `mtl-keras tune` and mtl_keras_app.tuning (Keras Tuner)
        "app": ["keras-tuner[bayesian]>=1.4,<2"],
        # make test's second pass runs the backend-agnostic tests on JAX: dev brings jax too
        "dev": [
            "keras-tuner[bayesian]>=1.4,<2",
            "pytest>=8",
            "ruff>=0.6",
            "nbformat>=5.9",
            "nbclient>=0.10",
            "ipykernel>=6.29",
            "jax>=0.4.30",
            "mkdocs>=1.6",
            "mkdocstrings-python>=1.10",
        ],
        # make docs: the guides and the API reference
        "docs": ["mkdocs>=1.6", "mkdocstrings-python>=1.10"],
        "bench": ["torch==2.13.0"],
        # keras-hub CNN backbones for enable_scale_shift (tested with 0.32.0; tests skip without it)
        "hub": ["keras-hub>=0.32"],
        # the JAX backend (KERAS_BACKEND=jax; episodes from mtl_keras.data.episode_source(...)). The CPU
        # wheel; for a GPU install jax[cuda12] as JAX documents. Tested with jax 0.10.2
        "jax": ["jax>=0.4.30"],
    },
    entry_points={"console_scripts": ["mtl-keras=mtl_keras_app.cli:main"]},
)
