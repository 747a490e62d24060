"""The official recipe's options under the demo's recipe, compared on *validation* only.

    python benchmarks/probes/recipe_options_val.py WEIGHTS [--out FILE] [--variant NAME ...]

WEIGHTS: a pretrained backbone of the ``cpu-glyph_scenes`` preset, e.g.
``benchmarks/glyph_scenes/seed-0/pretrained_backbone.weights.h5`` as `mtl-keras reproduce`
leaves it (git-ignored). Each variant meta-trains the SS row (`mtl_keras_app.ablation`:
`build_row_model`, `meta_train_row`) from those weights with the preset's recipe changed in one
place, and scores every epoch on the same 600 fixed 5-way 1-shot *validation* episodes (the
episodes of `reproduce`, episode seed 0); nothing here touches the test split. Variants:

* ``recipe``: the preset as it is (zeros head init, Adam ε 1e-7, 10 × 30 steps, rates halved
  every 3 epochs);
* ``kaiming``: the head initialised Kaiming-normal as the official ``BaseLearner``;
* ``eps1e-8``: Adam's ε 1e-8 (torch's default, the official optimizer's);
* ``longer``: twice the meta-iterations (20 × 30 steps), rates halved every 6 epochs.

Prints and writes (``--out``, JSON) each variant's validation accuracy per epoch (0 = before),
its best epoch and its mean outer gradient norms per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mtl_keras_app.ablation import (  # noqa: E402
    ReproduceSettings,
    build_row_model,
    draw_episodes,
    meta_train_row,
)
from mtl_keras_app.config import get_config  # noqa: E402
from mtl_keras_app.workflow import load_config_benchmark  # noqa: E402

VARIANTS = {
    "recipe": {},
    "kaiming": {"head_init": "kaiming"},
    "eps1e-8": {"adam_epsilon": 1e-8},
    "longer": {"meta_epochs": 20, "meta_lr_decay_every": 6},
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", help="pretrained backbone .weights.h5 of the cpu-glyph_scenes preset")
    parser.add_argument("--variant", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default=None, help="write the curves as JSON here")
    parser.add_argument(
        "--seed", type=int, default=0, help="the training seed (episodes: seed 0 as reproduce)"
    )
    args = parser.parse_args(argv)

    base = ReproduceSettings(config=get_config("cpu-glyph_scenes").replace(val_episodes=600, seed=args.seed))
    train, val, _ = load_config_benchmark(base.config)
    shots = 1
    episodes = draw_episodes(
        val, base.config.ways, shots, base.config.queries, base.config.val_episodes, 0 + 1
    )
    results = {}
    for name in args.variant:
        settings = base.replace(**VARIANTS[name]).validate()
        start = time.time()
        model = build_row_model("ss", settings, train.channels, args.weights)
        record = meta_train_row(
            model,
            settings,
            train,
            val,
            episodes,
            shots,
            settings.config.meta_epochs,
            settings.config.steps_per_epoch,
            verbose=False,
        )
        record["seconds"] = round(time.time() - start, 1)
        results[name] = record
        curve = " ".join(f"{100 * a:.2f}" for a in record["val_accuracy"])
        norms = " ".join(f"{v:.3g}" for v in record.get("phi_grad_norm", []))
        print(f"{name:>8}: validation {curve}; best epoch {record['best_epoch']}", flush=True)
        print(f"{'':>8}  Φ gradient norm per epoch {norms}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"weights": args.weights, "seed": args.seed, "variants": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
