"""Data: class splits, benchmark loaders, episodic pipelines (tf.data and backend-agnostic)."""

from mtl_keras.data import augment  # noqa: F401
from mtl_keras.data.episodes import EpisodeSampler, make_episodes, pretrain_dataset
from mtl_keras.data.hard_tasks import HardTaskPool
from mtl_keras.data.numpy_batches import EpochNumber, PretrainSource, pretrain_source
from mtl_keras.data.numpy_episodes import EpisodeSource, episode_source
from mtl_keras.data.registry import Benchmark, list_benchmarks, load_benchmark
from mtl_keras.data.split import ClassSplit

__all__ = [
    "Benchmark",
    "ClassSplit",
    "EpisodeSampler",
    "EpochNumber",
    "EpisodeSource",
    "HardTaskPool",
    "PretrainSource",
    "episode_source",
    "list_benchmarks",
    "load_benchmark",
    "make_episodes",
    "pretrain_dataset",
    "pretrain_source",
]
