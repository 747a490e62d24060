"""Evaluation on cached embeddings vs per-episode embedding: the demo's 600 test episodes.

    python benchmarks/evaluation_speed.py              # 3 interleaved rounds (≈ 3 min on 2 cores)
    python benchmarks/evaluation_speed.py --rounds 5

`mtl_keras.evaluation.evaluate_episodes` embeds every image of the split once and runs the
episodes' inner loops on gathered embeddings when batch norm uses stored statistics (the
default, ``cached=None``); ``cached=False`` embeds each episode's images through the whole model,
as the transductive modes must. This times both on the demo's setting — preset
``cpu-glyph_scenes`` (ResNet-12 16-32-64-128 at 32×32, 100 inner steps), the ``glyph_scenes``
test split (20 classes × 600 images), 600 5-way 1-shot episodes of 15 queries — in the same
process, alternating the two paths round by round (the first call of each, which traces the
graphs, is untimed). Prints the median seconds of each path, their ratio, and whether both
gave the same episode accuracies. The weights are the preset's random initialisation: the
work per episode does not depend on them. The numbers go to ``benchmarks/RESULTS.md`` by hand,
with this command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mtl_keras.evaluation import evaluate_episodes  # noqa: E402
from mtl_keras_app.config import get_config  # noqa: E402
from mtl_keras_app.workflow import build_meta_model, load_config_benchmark  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each path (default 3)")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--shots", type=int, default=1)
    args = parser.parse_args(argv)

    config = get_config("cpu-glyph_scenes")
    _, _, test = load_config_benchmark(config)
    model = build_meta_model(config, test.channels, None)

    def run(cached: bool):
        start = time.perf_counter()
        result = evaluate_episodes(
            model,
            test,
            config.ways,
            args.shots,
            config.test_queries,
            episodes=args.episodes,
            seed=100,
            cached=cached,
            verbose=False,
        )
        return time.perf_counter() - start, result

    run(True), run(False)  # trace both
    times = {True: [], False: []}
    results = {}
    for r in range(args.rounds):
        for cached in (True, False) if r % 2 == 0 else (False, True):
            seconds, results[cached] = run(cached)
            times[cached].append(seconds)
    cached_s, episode_s = statistics.median(times[True]), statistics.median(times[False])
    same = np.array_equal(results[True].episode_accuracies, results[False].episode_accuracies)
    close = np.abs(results[True].episode_accuracies - results[False].episode_accuracies).max()
    print(
        f"{args.episodes} episodes {config.ways}-way {args.shots}-shot, {config.test_queries} queries, "
        f"{model.eval_inner_steps} inner steps, {test.num_classes} classes / {test.num_images} images; medians of {args.rounds} rounds (s):"
    )
    print(
        f"  cached embeddings (default): {cached_s:.2f}   rounds {' '.join(f'{t:.2f}' for t in times[True])}"
    )
    print(
        f"  per-episode embedding:       {episode_s:.2f}   rounds {' '.join(f'{t:.2f}' for t in times[False])}"
    )
    print(f"  speed-up: {episode_s / cached_s:.1f}x")
    print(
        f"  accuracy: cached {100 * results[True].mean:.2f}%, per-episode {100 * results[False].mean:.2f}%; "
        f"episode accuracies identical: {same} (largest difference {close:.4f})"
    )
    return {"cached": times[True], "per_episode": times[False], "same": bool(same)}


if __name__ == "__main__":
    main()
