"""Keras callbacks for meta-transfer learning.

* `HardTaskMining`: hard tasks attached to a ``fit`` in one place (the model's failure
  reports, the stream's position, the per-epoch log); `HardTaskLogger`: the log alone.
* `ResumableCheckpoint`: atomic per-epoch backups of weights, both optimizers,
  the episode stream and the hard-task pool; exact resume after a crash.
  `ResumableEarlyStopping`: Keras's early stop whose count and best weights survive a resume.
* `StopOnNonFiniteLoss`: stop at the first NaN/inf loss, naming epoch, batch and fix.
* `BestCheckpoint`: the best epoch's weights, written atomically (`save_weights_atomic`).
* `ReestimateBatchNorm`: batch norm's moving statistics recomputed before every evaluation
  (pretraining on small sets).
* `OuterRateDecay`: a step decay of both outer learning rates; `DivergenceGuard`: an epoch whose
  outer gradients blew up is undone, both rates lowered, and the log says so.
* `EpochSeeds`: each epoch's data order and random seeds drawn from the epoch, so a resumed
  training replays the epochs an uninterrupted one would have run.
* `TimeEstimate`: how long a ``fit`` will take, once its speed is known, and how long it took.
"""

from mtl_keras.callbacks.batch_norm import ReestimateBatchNorm
from mtl_keras.callbacks.checkpoint import BestCheckpoint, save_weights_atomic
from mtl_keras.callbacks.epoch_seeds import EpochSeeds
from mtl_keras.callbacks.hard_tasks import HardTaskLogger, HardTaskMining
from mtl_keras.callbacks.outer_rates import DivergenceGuard, OuterRateDecay
from mtl_keras.callbacks.resumable import ResumableCheckpoint, ResumableEarlyStopping
from mtl_keras.callbacks.stop import StopOnNonFiniteLoss
from mtl_keras.callbacks.time_estimate import TimeEstimate, format_duration

__all__ = [
    "BestCheckpoint",
    "DivergenceGuard",
    "EpochSeeds",
    "HardTaskLogger",
    "HardTaskMining",
    "OuterRateDecay",
    "ReestimateBatchNorm",
    "ResumableCheckpoint",
    "ResumableEarlyStopping",
    "StopOnNonFiniteLoss",
    "TimeEstimate",
    "format_duration",
    "save_weights_atomic",
]
