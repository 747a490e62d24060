"""Does mixed_bfloat16 cost accuracy? Glyph 5-way 1-shot, float32 vs mixed_bfloat16, same seeds."""

from __future__ import annotations

import os
import tempfile

PRECISIONS = ("float32", "mixed_bfloat16")


def precision_accuracy(
    episodes: int = 600,
    seed: int = 0,
    preset: str = "cpu-glyphs",
    verbose: bool = False,
    **overrides,
) -> dict:
    """Meta-train and evaluate the same model in each precision, from one pretrained backbone.

    Pretraining runs once, in float32 (the Θ every MTL run starts from); then, for each of
    ``float32`` and ``mixed_bfloat16``, a `MetaTransferModel` is built under that dtype policy,
    meta-trained with the preset's settings and ``seed``, and evaluated on ``episodes`` test
    episodes drawn with ``seed`` (the same episodes for both).

    Args:
        episodes: test episodes (the paper's 600).
        seed: seed of every initialiser and sampler.
        preset: an `mtl_keras_app.config` preset (``cpu-glyphs``: ResNet-12 16-32-64-128 at 32×32).
        verbose: show Keras progress.
        **overrides: `ExperimentConfig` fields to change (e.g. ``meta_epochs`` for a quick check).

    Returns:
        ``{"float32": EvaluationResult.to_dict(), "mixed_bfloat16": ..., "config": {...}}``.
    """

    from mtl_keras.evaluation import evaluate_episodes
    from mtl_keras.hardware import ALLOW_EMULATED_BF16
    from mtl_keras_app.config import get_config
    from mtl_keras_app.workflow import build_meta_model, load_config_benchmark, meta_train, pretrain

    # This compares the two precisions' accuracy: bfloat16 even where the CPU emulates it.
    os.environ[ALLOW_EMULATED_BF16] = "1"
    config = get_config(preset, **{"shots": (1,), "test_episodes": episodes, "seed": seed, **overrides})
    splits = load_config_benchmark(config)
    results = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()}}
    with tempfile.TemporaryDirectory() as tmp:
        pretrained, _ = pretrain(config, splits.train, verbose=verbose)  # float32
        weights = os.path.join(tmp, "pretrained_backbone.weights.h5")
        pretrained.backbone.save_weights(weights)
        for precision in PRECISIONS:
            # build_meta_model builds the backbone under config.precision
            model = build_meta_model(config.replace(precision=precision), splits.train.channels, weights)
            meta_train(
                config,
                model,
                splits.train,
                splits.val,
                1,
                os.path.join(tmp, f"meta_{precision}.weights.h5"),
                verbose=verbose,
            )
            result = evaluate_episodes(
                model,
                splits.test,
                config.ways,
                1,
                config.test_queries,
                episodes=episodes,
                seed=seed,
                verbose=verbose,
            )
            results[precision] = result.to_dict()
    return results
