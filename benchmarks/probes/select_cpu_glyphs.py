"""How the `cpu-glyphs` meta-training rates were chosen: on the *validation* split only.

Loads a pretrained backbone (``pretrained_backbone.weights.h5`` of a demo run folder), then for
each candidate setting meta-trains 4 × 25 steps of 5-way 1-shot and prints the mean accuracy of
200 validation episodes before training and after each round (with the training loss).

    python benchmarks/probes/select_cpu_glyphs.py runs/demo-XXXX/pretrained_backbone.weights.h5
"""

from __future__ import annotations

import argparse

from mtl_keras import load_benchmark, make_episodes
from mtl_keras_app.config import get_config
from mtl_keras_app.workflow import build_meta_model

CANDIDATES = {
    "inner 20, lr 0.1, phi 1e-3, head 1e-3": dict(inner_lr=0.1, phi_lr=1e-3, head_lr=1e-3),
    "inner 20, lr 0.1, phi 1e-3, head frozen": dict(inner_lr=0.1, phi_lr=1e-3, head_lr=1e-12),
    "inner 100, lr 0.1, phi 1e-3, head 1e-4": dict(inner_lr=0.1, inner_steps=100, phi_lr=1e-3, head_lr=1e-4),
    "inner 20, lr 0.05, phi 3e-4, head 1e-4": dict(inner_lr=0.05, phi_lr=3e-4, head_lr=1e-4),
}


def main(weights: str, rounds: int = 4, steps: int = 25, seed: int = 0) -> None:
    base = get_config("cpu-glyphs")
    train, val, _ = load_benchmark("glyphs", image_size=base.image_size, verbose=False)
    for name, changes in CANDIDATES.items():
        config = base.replace(seed=seed, **changes)
        model = build_meta_model(config, train.channels, weights)
        val_eps = make_episodes(
            val, 5, 1, 15, meta_batch_size=10, num_batches=20, seed=seed + 1, repeatable=True
        )
        train_eps = make_episodes(train, 5, 1, 15, meta_batch_size=config.meta_batch_size, seed=seed)
        row = [f"{model.evaluate(val_eps, verbose=0, return_dict=True)['accuracy']:.4f}"]
        for _ in range(rounds):
            hist = model.fit(train_eps, steps_per_epoch=steps, epochs=1, verbose=0)
            acc = model.evaluate(val_eps, verbose=0, return_dict=True)["accuracy"]
            row.append(f"loss {hist.history['loss'][0]:.3f} / val {acc:.4f}")
        print(f"{name}: " + " → ".join(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="pretrained_backbone.weights.h5 of a cpu-glyphs run")
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args().weights, seed=parser.parse_args().seed)
