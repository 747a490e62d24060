"""Experiment presets as dataclasses."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass
class ExperimentConfig:
    """Everything one pretrain → meta-train → evaluate → export run needs.

    Data:
        benchmark: a `list_benchmarks()` name; root: its folder (None for glyphs);
        image_size: side of the square images fed to the backbone.
    Backbone:
        backbone: ``resnet12`` | ``conv4`` | ``resnet18``; widths: channels per block.
    Pretraining (ordinary classification over the base classes):
        pretrain_epochs, pretrain_batch_size, pretrain_lr, pretrain_dropout, pretrain_augment.
    Meta-transfer:
        ways, shots (one MTL model is meta-trained per shot setting), queries,
        meta_batch_size, meta_epochs, steps_per_epoch, inner_steps, eval_inner_steps,
        inner_lr, phi_lr (Φ, paper code: 1e-4), head_lr (head init, paper code: 1e-3),
        first_order.
    Evaluation:
        val_episodes (per epoch, for model selection), test_episodes (paper: 600),
        test_queries.
    seed: seeds every sampler and initialiser.
    """

    benchmark: str = "glyphs"
    root: str | None = None
    image_size: int = 32
    backbone: str = "resnet12"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    pretrain_epochs: int = 10
    pretrain_batch_size: int = 128
    pretrain_lr: float = 1e-3
    pretrain_dropout: float = 0.0
    pretrain_augment: bool = True
    ways: int = 5
    shots: tuple[int, ...] = (1, 5)
    queries: int = 15
    meta_batch_size: int = 2
    meta_epochs: int = 10
    steps_per_epoch: int = 100
    inner_steps: int = 20
    eval_inner_steps: int = 100
    inner_lr: float = 0.01
    phi_lr: float = 1e-4
    head_lr: float = 1e-3
    first_order: bool = False
    val_episodes: int = 100
    test_episodes: int = 600
    test_queries: int = 15
    seed: int = 0

    def replace(self, **changes) -> ExperimentConfig:
        """A copy with ``changes``; unknown keys raise naming the key."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(f"Unknown config key(s) {unknown}. Known: {sorted(fields)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        values = dict(values)
        for key in ("widths", "shots"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        return cls().replace(**values)


PRESETS: dict[str, ExperimentConfig] = {
    # Fast enough for a 2-core CPU: `make demo` runs this (≤ 15 min with install).
    "cpu-glyphs": ExperimentConfig(
        benchmark="glyphs",
        image_size=32,
        backbone="resnet12",
        widths=(16, 32, 64, 128),
        pretrain_epochs=4,
        pretrain_batch_size=128,
        pretrain_lr=2e-3,
        ways=5,
        shots=(1, 5),
        queries=15,
        meta_batch_size=4,
        meta_epochs=5,
        steps_per_epoch=30,
        inner_steps=20,
        eval_inner_steps=100,
        inner_lr=0.1,
        phi_lr=1e-3,
        head_lr=1e-3,
        val_episodes=100,
        test_episodes=600,
    ),
}


def get_config(name_or_path: str, **overrides) -> ExperimentConfig:
    """A preset by name, or a JSON file of `ExperimentConfig` fields, with overrides."""
    if name_or_path in PRESETS:
        config = PRESETS[name_or_path]
    elif name_or_path.endswith(".json"):
        with open(name_or_path) as f:
            config = ExperimentConfig.from_dict(json.load(f))
    else:
        raise ValueError(
            f"Unknown config '{name_or_path}': give a preset ({', '.join(PRESETS)}) or a .json file."
        )
    return config.replace(**overrides) if overrides else config
