"""What 80 more inner steps cost in a meta-training step's inner loop, and whether folding the
head's bias into its weights (one matmul per step instead of matmul + bias, one update instead
of two) or compiling the loop with XLA (``tf.function(jit_compile=True)`` around
`inner_loop`, inside the step's graph) makes them cheaper.

The inner loop of training (`mtl_keras.models.base_learner.inner_loop`, unrolled, no history)
with the outer gradient taken through it (second order) with respect to the support and query
embeddings and the head's initialisation, at a ResNet-12 meta-batch's sizes (B=2 tasks, 5-way
1-shot, 15 queries, 512-dimensional embeddings), 20 and 100 steps, float32. "folded bias": the
same steps on ``[features, 1] @ [W; b]``; "XLA": mtl_keras' loop compiled by XLA. Medians of
``--rounds`` rounds of 10 calls, the variants interleaved; "first call" includes tracing and
compiling. Used in benchmarks/RESULTS.md (the AMX table's notes).

    python benchmarks/probes/inner_loop_formulation.py
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras.models.base_learner import inner_loop  # noqa: E402

KINDS = ("inner_loop (mtl_keras)", "folded bias", "XLA")


def folded_bias_loop(features, labels, w0, b0, steps, lr):
    """The inner loop with the bias as an extra row of the weights (ones appended to the features)."""
    batch, shots, ways = features.shape[0], features.shape[1], w0.shape[-1]
    onehot = tf.one_hot(labels, ways)
    augmented = tf.concat([features, tf.ones((batch, shots, 1))], axis=-1)
    head = tf.tile(tf.concat([w0, b0[None]], 0)[None], [batch, 1, 1])
    scale = lr / shots
    for _ in range(steps):
        dlogits = tf.nn.softmax(tf.matmul(augmented, head)) - onehot
        head = head - scale * tf.matmul(augmented, dlogits, transpose_a=True)
    return head[:, :-1], head[:, -1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    batch, ways, shots, queries, dim = 2, 5, 1, 15, 512
    support = tf.constant(rng.normal(size=(batch, ways * shots, dim)), tf.float32)
    query = tf.constant(rng.normal(size=(batch, ways * queries, dim)), tf.float32)
    labels = tf.constant(np.tile(np.repeat(np.arange(ways), shots), (batch, 1)), tf.int32)
    w0 = tf.Variable(rng.normal(size=(dim, ways)).astype(np.float32) * 0.01)
    b0 = tf.Variable(np.zeros(ways, np.float32))

    def make(kind, steps):
        def loop(support):
            return inner_loop(support, labels, w0, b0, steps, 0.05, record_history=False, unroll=True)[:2]

        xla_loop = tf.function(loop, jit_compile=True)

        @tf.function
        def step(support, query):
            with tf.GradientTape() as tape:
                tape.watch([support, query])
                if kind == KINDS[0]:
                    w, b = loop(support)
                elif kind == KINDS[1]:
                    w, b = folded_bias_loop(support, labels, w0, b0, steps, 0.05)
                else:
                    w, b = xla_loop(support)
                logits = tf.einsum("bqd,bdn->bqn", query, w) + b[:, None]
                targets = tf.zeros_like(logits[..., 0], tf.int32)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits))
            return tape.gradient(loss, [support, query, w0, b0])

        return step

    runs = {(kind, steps): make(kind, steps) for kind in KINDS for steps in (20, 100)}
    first_call = {}
    for key, run in runs.items():
        start = time.perf_counter()
        run(support, query)
        first_call[key] = time.perf_counter() - start
    times = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            start = time.perf_counter()
            for _ in range(10):
                run(support, query)
            times[key].append((time.perf_counter() - start) / 10)
    print(
        "| formulation | ms, 20 steps | ms, 100 steps | ms per extra step | first call s, 20 / 100 steps "
        "| ops in the graph (20 steps) | gradients vs mtl_keras', largest relative difference |"
    )
    print("|---|---|---|---|---|---|---|")
    want = runs[(KINDS[0], 100)](support, query)
    for kind in KINDS:
        t20, t100 = (1000 * float(np.median(times[(kind, s)])) for s in (20, 100))
        ops = len(runs[(kind, 20)].get_concrete_function(support, query).graph.get_operations())
        got = runs[(kind, 100)](support, query)
        diff = max(
            float(tf.reduce_max(tf.abs(a - b)) / (tf.reduce_max(tf.abs(b)) + 1e-30))
            for a, b in zip(got, want)
        )
        print(
            f"| {kind} | {t20:.2f} | {t100:.2f} | {(t100 - t20) / 80:.3f} "
            f"| {first_call[(kind, 20)]:.2f} / {first_call[(kind, 100)]:.2f} | {ops} | {diff:.2e} |"
        )


if __name__ == "__main__":
    main()
