"""`HardTaskPool`: the hard-task (HT) meta-batch of meta-transfer learning.

After every training step the model reports, for each task of the meta-batch,
the query accuracy of each of its classes. The class with the lowest accuracy
is the task's *failure class*; the pool collects failure classes (as global
class ids) together with the images the failing task used for them, and the
episode pipeline then draws *hard tasks*: ``N`` classes taken from the pool,
with fresh support and query images (the failing task's images excluded).

The pool is the only link between data and model (`data` never imports
`models`); the callback `mtl_keras.callbacks.HardTaskMining` attaches it to a ``fit``
(the model reports to the pool, the stream counts trained meta-batches, each epoch logs)::

    pool = HardTaskPool(schedule="periodic", every=10, hard_batches=5, seed=0)
    episodes = make_episodes(train, ways=5, shots=1, queries=15, meta_batch_size=4,
                             hard_tasks=pool)          # the pipeline draws from it
    model.fit(episodes, steps_per_epoch=100, epochs=10, callbacks=[HardTaskMining(episodes)])

Schedules:

* ``"periodic"`` (the paper's HT meta-batch): after every ``every`` normal
  meta-batches, as soon as the pool holds at least ``N`` distinct classes, emit
  ``hard_batches`` meta-batches made only of hard tasks, then start a new round
  with an empty pool: the hard meta-batches draw from the pool as it stood when
  the round began, and only failures pooled after that feed the next round (each
  failure serves one round; nothing stale is reused). If the pool holds fewer than
  ``N`` classes when a round is due, normal meta-batches continue (and failures
  keep accumulating) until it does.
* ``"mixed"``: once the pool holds at least ``N`` classes, each meta-batch carries
  a fraction ``hard_fraction`` of hard tasks (a deterministic running credit, so
  ``hard_fraction * B`` need not be an integer: with ``B=4`` and ``0.1`` every
  2nd or 3rd meta-batch carries one). The pool is a sliding window over the
  ``window`` most recent failures (default: as many as one periodic round collects).

Feedback lag. The generator runs ahead of training: `tf.data` prefetches, so
when the model reports on meta-batch ``s`` the generator has already drawn a few
more. Reports are matched to drawn meta-batches in FIFO order (each report
belongs to the oldest drawn meta-batch not yet reported; its ``task_classes``
must match — drawn meta-batches skipped on the way, e.g. prefetched elements
dropped with a discarded iterator, are *orphans*: never trained, never reported).
The number of drawn-but-unreported meta-batches is bounded by the pipeline's
buffers: at most ``prefetch + num_parallel_calls + 1`` (prefetch buffer, parallel
map in flight, the one being trained; measured exactly so in `fit`). With
`make_episodes`' defaults (``prefetch=2``, AUTOTUNE map, whose parallelism is at
most the number of CPU cores) that is 5 on 2 cores. ``stats()["max_in_flight"]``
records the largest value seen.

To keep the stream independent of thread timing, the failures reported for
meta-batch ``s`` enter the pool exactly when meta-batch ``s + delay`` is drawn
(default ``delay=5``). That is exact whenever ``delay`` is at least the lag bound
above; a report arriving later is still used, at the next draw, and counted in
``stats()["late_reports"]`` — raise ``delay`` (or give `make_episodes` an explicit
``num_parallel_calls``) if it is not 0 and you need reproducible runs.

Reference:
    Sun et al., "Meta-Transfer Learning through Hard Tasks", TPAMI 2020, §4.3
    (and "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019).
"""

from mtl_keras.data.hard_tasks.feedback import select_failures
from mtl_keras.data.hard_tasks.pool import HardTaskPool
from mtl_keras.data.hard_tasks.schedule import SCHEDULES, WEIGHTINGS

__all__ = ["SCHEDULES", "WEIGHTINGS", "HardTaskPool", "select_failures"]
