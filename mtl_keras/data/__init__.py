"""Data: class splits, benchmark loaders, episodic pipelines."""

from mtl_keras.data import augment  # noqa: F401
from mtl_keras.data.episodes import EpisodeSampler, make_episodes, pretrain_dataset
from mtl_keras.data.hard_tasks import HardTaskPool
from mtl_keras.data.registry import Benchmark, list_benchmarks, load_benchmark
from mtl_keras.data.split import ClassSplit

__all__ = [
    "Benchmark",
    "ClassSplit",
    "EpisodeSampler",
    "HardTaskPool",
    "list_benchmarks",
    "load_benchmark",
    "make_episodes",
    "pretrain_dataset",
]
