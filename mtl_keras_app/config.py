"""Experiment presets as dataclasses: `ExperimentConfig`, `PRESETS` (cpu, cpu-glyph_scenes, cpu-glyphs and the paper's
settings per benchmark), `get_config` and `resolve_config` (the CLI's config resolution).
Each preset value says where it comes from."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Dtype policies `ExperimentConfig.precision` takes.
PRECISIONS = ("float32", "mixed_bfloat16")
#: Optimizers `ExperimentConfig.pretrain_optimizer` takes.
PRETRAIN_OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass
class ExperimentConfig:
    """Everything one pretrain → meta-train → evaluate → export run needs.

    Data:
        benchmark: a `list_benchmarks()` name; root: its folder (None for glyphs);
        image_size: side of the square images fed to the backbone; allow_pickle: read
        benchmark files that are Python pickles (fc100, cifar_fs: the CIFAR-100 archive; the
        MetaOptNet / learn2learn miniImageNet files) —
        set it only for files you trust (CLI: ``--allow-pickle``); drop_small_classes: drop
        (and name) the classes with too few images for an episode of some shot setting
        instead of refusing the run; verify (the image check of folder benchmarks at load:
        ``full`` — every image decodes and no JPEG's data is corrupt, ``header`` — every file
        opens as an image, ``auto`` — the loader's default: ``full`` for the folders benchmark
        up to 50,000 files, ``none``); skip_unreadable (leave unreadable files out, listed in
        a warning, instead of stopping the run).
    Backbone:
        backbone: ``resnet12`` | ``conv4`` | ``resnet18``; widths: channels per block.
    Pretraining (ordinary classification over the base classes):
        pretrain_epochs (with ``pretrain_patience`` > 0: the most epochs), pretrain_patience
        (stop once the held-out accuracy has not improved for this many epochs and keep the
        best epoch; 0 = exactly ``pretrain_epochs``), pretrain_batch_size, pretrain_lr (of
        pretrain_optimizer: ``adam``, or ``sgd`` — momentum 0.9 and weight decay 5e-4, the
        official PyTorch code's; both with a cosine decay over ``pretrain_epochs``),
        pretrain_dropout, pretrain_augment.
    Meta-transfer:
        ways, shots (one MTL model is meta-trained per shot setting), queries,
        meta_batch_size, meta_epochs, steps_per_epoch, inner_steps, eval_inner_steps,
        inner_lr, phi_lr (Φ, paper code: 1e-4), head_lr (head init, paper code: 1e-3),
        first_order, precision (the backbone's dtype policy in meta-training,
        evaluation and export: ``float32`` or ``mixed_bfloat16``; pretraining is float32).
    The official recipe's pieces (yaoyao-liu/meta-transfer-learning ``pytorch/``), each an option:
        train_batch_norm (meta-train batch norm's γ/β with Φ, as its first Adam group),
        head_init (``zeros`` or ``kaiming``, its ``BaseLearner``), adam_epsilon (ε of both
        outer-loop Adams; Keras adds it to √v before v's bias correction, torch after it, so
        Keras' ε equals torch's ε·√(1−β2^t): ≤ torch's), meta_lr_decay_every /
        meta_lr_decay_rate (both outer rates × rate every that many epochs; 0 = constant; the
        official code: ×0.5 every 10), batch_norm (``frozen`` | ``transductive`` |
        ``transductive_separate``, see `MetaTransferModel`).
    The head and the outer loop's safeguards (beyond the paper; see `MetaTransferModel`):
        head_init ``prototypes`` (each task's inner loop starts at its nearest-centroid head,
        Proto-MAML), logits (``linear`` | ``cosine``: L2-normalised features times a learned
        scale), normalize_inner_step (the inner step on ``W`` divided by the support features'
        mean squared norm: stable for any inner_lr < 2), outer_clipnorm (each outer optimizer's
        gradient clipped to this global norm; 0 = off), divergence_guard (`DivergenceGuard`: an
        epoch whose outer gradient norm or loss exceeds 10× the first epoch's is undone and both
        outer rates halved).
    Hard tasks (the HT meta-batch, `mtl_keras.data.HardTaskPool`, periodic schedule):
        hard_tasks (on/off), ht_every (normal meta-batches between hard rounds, paper: 10),
        ht_hard_batches (hard meta-batches per round, paper: 5).
    Evaluation:
        val_episodes (per epoch, for model selection), test_episodes (paper: 600),
        test_queries.
    seed: seeds every sampler and initialiser.
    """

    benchmark: str = "glyphs"
    root: str | None = None
    image_size: int = 32
    allow_pickle: bool = False
    drop_small_classes: bool = False
    verify: str = "auto"
    skip_unreadable: bool = False
    backbone: str = "resnet12"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    pretrain_epochs: int = 10
    pretrain_patience: int = 0
    pretrain_batch_size: int = 128
    pretrain_lr: float = 1e-3
    pretrain_optimizer: str = "adam"
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
    train_batch_norm: bool = False
    head_init: str = "zeros"
    logits: str = "linear"
    normalize_inner_step: bool = False
    outer_clipnorm: float = 0.0
    divergence_guard: bool = True
    adam_epsilon: float = 1e-7
    meta_lr_decay_every: int = 0
    meta_lr_decay_rate: float = 0.5
    batch_norm: str = "frozen"
    precision: str = "float32"
    hard_tasks: bool = False
    ht_every: int = 10
    ht_hard_batches: int = 5
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

    def validate(self) -> ExperimentConfig:
        """Check every field's type and range; return ``self``.

        Raises:
            ValueError: naming the first field that is wrong and what it must be.
        """
        from mtl_keras.data.registry import list_benchmarks

        def fail(key, must):
            raise ValueError(f"Config key '{key}' must be {must}, got {getattr(self, key)!r}.")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        if self.benchmark not in list_benchmarks():
            fail("benchmark", f"one of {sorted(list_benchmarks())}")
        if self.root is not None and not isinstance(self.root, str):
            fail("root", "a folder path or None")
        if not isinstance(self.allow_pickle, bool):
            fail("allow_pickle", "true or false")
        if not isinstance(self.skip_unreadable, bool):
            fail("skip_unreadable", "true or false")
        if self.verify not in ("auto", "header", "full", "none"):
            fail("verify", "one of ['auto', 'header', 'full', 'none']")
        if self.backbone not in BACKBONE_NAMES:
            fail("backbone", f"one of {list(BACKBONE_NAMES)}")
        if not (
            isinstance(self.widths, tuple) and self.widths and all(is_int(w) and w > 0 for w in self.widths)
        ):
            fail("widths", "a non-empty tuple of positive ints")
        if self.backbone in ("resnet12", "resnet18") and len(self.widths) != 4:
            fail("widths", f"4 channel counts for {self.backbone}")
        if not (
            isinstance(self.shots, tuple) and self.shots and all(is_int(k) and k > 0 for k in self.shots)
        ):
            fail("shots", "a non-empty tuple of positive ints")
        minimum = {
            "image_size": 16,
            "pretrain_batch_size": 1,
            "ways": 2,
            "queries": 1,
            "meta_batch_size": 1,
            "steps_per_epoch": 1,
            "ht_every": 1,
            "ht_hard_batches": 1,
            "val_episodes": 1,
            "test_episodes": 1,
            "test_queries": 1,
            "pretrain_epochs": 0,
            "pretrain_patience": 0,
            "meta_epochs": 0,
            "meta_lr_decay_every": 0,
            "inner_steps": 0,
            "eval_inner_steps": 0,
            "seed": 0,
        }
        for key, low in minimum.items():
            value = getattr(self, key)
            if not (is_int(value) and value >= low):
                fail(key, f"an int >= {low}")
        for key in ("pretrain_lr", "inner_lr", "phi_lr", "head_lr", "adam_epsilon"):
            value = getattr(self, key)
            if not (is_num(value) and math.isfinite(value) and value > 0):
                fail(key, "a positive number")
        if not (
            is_num(self.outer_clipnorm) and math.isfinite(self.outer_clipnorm) and self.outer_clipnorm >= 0
        ):
            fail("outer_clipnorm", "a number >= 0 (0: no clipping)")
        if self.normalize_inner_step and self.inner_lr >= 2:
            fail("inner_lr", "below 2 with normalize_inner_step=true (the inner loop's stability bound)")
        if not (is_num(self.meta_lr_decay_rate) and 0 < self.meta_lr_decay_rate <= 1):
            fail("meta_lr_decay_rate", "a number in (0, 1]")
        from mtl_keras.models.meta_transfer import BATCH_NORM_MODES, HEAD_INITIALIZERS, LOGITS

        if self.head_init not in HEAD_INITIALIZERS:
            fail("head_init", f"one of {list(HEAD_INITIALIZERS)}")
        if self.logits not in LOGITS:
            fail("logits", f"one of {list(LOGITS)}")
        if self.batch_norm not in BATCH_NORM_MODES:
            fail("batch_norm", f"one of {list(BATCH_NORM_MODES)}")
        if not (is_num(self.pretrain_dropout) and 0 <= self.pretrain_dropout < 1):
            fail("pretrain_dropout", "a number in [0, 1)")
        for key in (
            "pretrain_augment",
            "first_order",
            "hard_tasks",
            "train_batch_norm",
            "drop_small_classes",
            "normalize_inner_step",
            "divergence_guard",
        ):
            if not isinstance(getattr(self, key), bool):
                fail(key, "true or false")
        if self.pretrain_optimizer not in PRETRAIN_OPTIMIZERS:
            fail("pretrain_optimizer", f"one of {list(PRETRAIN_OPTIMIZERS)}")
        if self.precision not in PRECISIONS:
            fail(
                "precision",
                f"one of {list(PRECISIONS)} (mixed_float16 needs loss scaling, not supported yet)",
            )
        return self

    def with_overrides(self, assignments: Sequence[str]) -> ExperimentConfig:
        """A copy with ``["key=value", ...]`` applied (the CLI's ``--set``).

        Values are parsed by the field's type: ints, floats, ``true``/``false``,
        ``none`` for an optional string, and ``4,4,4,4`` (or a JSON list) for tuples.

        Raises:
            ValueError: naming the assignment that is malformed, the unknown key
                (`replace`'s message) or the value that does not parse.
        """
        changes = {}
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"Override '{item}' must look like key=value.")
            changes[key] = text.strip()
        unknown = sorted(set(changes) - set(_FIELD_TYPES))
        if unknown:
            self.replace(**dict.fromkeys(unknown))  # raises, naming the key(s)
        return self.replace(**{key: parse_value(key, text) for key, text in changes.items()})


#: Names `ExperimentConfig.backbone` may take (see `mtl_keras.backbones.BACKBONES`).
BACKBONE_NAMES = ("resnet12", "conv4", "resnet18")

_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(ExperimentConfig)}


def parse_value(key: str, text: str):
    """Parse the string ``text`` as a value of config field ``key``.

    Raises:
        ValueError: ``"Config key 'key' expects <type>, got 'text'."``
    """
    kind = _FIELD_TYPES[key]
    value = text.strip()
    try:
        if kind.startswith("tuple"):
            stripped = value.strip("()[] ")
            return tuple(int(v) for v in stripped.replace(",", " ").split()) if stripped else ()
        if kind == "bool":
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if "None" in kind and value.lower() in ("none", "null", ""):
            return None
        return value
    except ValueError:
        raise ValueError(f"Config key '{key}' expects {kind}, got {text!r}.") from None


PRESETS: dict[str, ExperimentConfig] = {
    # Fast enough for a 2-core CPU: `make demo` runs this (≤ 15 min with install).
    # Meta-training rates chosen on the validation split with benchmarks/probes/select_cpu_glyphs.py:
    # inner lr 0.1 or head lr 1e-3 lowered validation accuracy; 0.05 / 3e-4 / 1e-4 kept it.
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
        inner_lr=0.05,
        phi_lr=3e-4,
        head_lr=1e-4,
        val_episodes=100,
        test_episodes=600,
    ),
}


#: The meta-transfer recipe of the ``cpu`` presets. Chosen on the *validation* splits of four
#: development sets together (glyph_scenes and the clipart / crawl_tiles / cards folder sets of
#: benchmarks/devsets/build.py; the comparison: benchmarks/recipe_selection/RESULTS.md): each
#: task's inner loop starts at its prototype head (nearest centroid), on cosine logits (L2-normalised
#: features times a learned scale), with the inner step normalised by the features' scale at rate
#: 1.5 — stable however meta-training scales the features (below 2) — and 100 steps in training as
#: at test; Φ and batch norm's γ/β at Adam 3e-3, the head at 1e-3, both halved every 3 epochs, each
#: optimizer's gradient clipped to global norm 5 (epoch means were 0.1 to 1.6: it only cuts spikes,
#: and changed no validation number); the divergence guard on; 10 × 30 meta-batches of 4 tasks. On validation it matched the paper's head
#: and inner loop (rate 0.01 on raw features: 0.01 × ρ² ≈ 3 to 4.6 in normalised units on those
#: sets, past the stable range) on average over the four sets, 1-shot.
_CPU_META_RECIPE = dict(
    image_size=32,
    backbone="resnet12",
    widths=(16, 32, 64, 128),
    pretrain_batch_size=128,
    pretrain_lr=2e-3,
    ways=5,
    shots=(1, 5),
    queries=15,
    meta_batch_size=4,
    meta_epochs=10,
    steps_per_epoch=30,
    inner_steps=100,
    eval_inner_steps=100,
    inner_lr=1.5,
    normalize_inner_step=True,
    logits="cosine",
    head_init="prototypes",
    divergence_guard=True,
    outer_clipnorm=5.0,
    phi_lr=3e-3,
    head_lr=1e-3,
    train_batch_norm=True,
    meta_lr_decay_every=3,
    meta_lr_decay_rate=0.5,
    val_episodes=300,
    test_episodes=600,
)

# `make demo` (≤ 15 min with install on 2 cores): pretraining fixed at 4 epochs, 5-way 1-shot
# only (the 5-shot model doubles the meta-training time: --set shots=1,5 for both).
PRESETS["cpu-glyph_scenes"] = ExperimentConfig(
    benchmark="glyph_scenes", pretrain_epochs=4, **{**_CPU_META_RECIPE, "shots": (1,)}
)
# The default of `mtl-keras run` and the stage commands, for any benchmark on a CPU (your own
# data: --benchmark folders --root DIR): pretraining until the held-out accuracy stops improving
# (5 epochs of patience, at most 60), then the same meta-transfer recipe.
PRESETS["cpu"] = ExperimentConfig(
    benchmark="glyph_scenes", pretrain_epochs=60, pretrain_patience=5, **_CPU_META_RECIPE
)


def _paper_config(benchmark: str, image_size: int, shots: tuple[int, ...]) -> ExperimentConfig:
    """MTL's settings (Sun et al., CVPR 2019, §5) as far as the official code pins them.

    Every value, with the line of the official code it comes from and what differs here, is
    listed in the recipe guide (``docs/guides/recipe.md``, "The paper presets").
    """
    return ExperimentConfig(
        benchmark=benchmark,
        image_size=image_size,
        backbone="resnet12",
        widths=(64, 128, 256, 512),
        pretrain_epochs=100,
        pretrain_batch_size=128,
        pretrain_lr=1e-3,
        pretrain_dropout=0.1,
        pretrain_augment=True,
        ways=5,
        shots=shots,
        queries=15,
        meta_batch_size=2,
        meta_epochs=100,
        steps_per_epoch=100,
        inner_steps=20,
        eval_inner_steps=100,
        inner_lr=0.01,
        phi_lr=1e-4,
        head_lr=1e-3,
        first_order=False,
        train_batch_norm=True,
        head_init="kaiming",
        adam_epsilon=1e-8,
        meta_lr_decay_every=10,
        meta_lr_decay_rate=0.5,
        val_episodes=600,
        test_episodes=600,
        test_queries=15,
    )


# The paper's settings: ``paper-<benchmark>`` meta-trains one model per shot (1 and 5);
# ``paper-<benchmark>-1shot`` / ``-5shot`` only one. Give the data folder with ``root``
# (CLI: ``--root``).
for _benchmark, _size in (("mini_imagenet", 84), ("tiered_imagenet", 84), ("fc100", 32)):
    PRESETS[f"paper-{_benchmark}"] = _paper_config(_benchmark, _size, (1, 5))
    for _shot in (1, 5):
        PRESETS[f"paper-{_benchmark}-{_shot}shot"] = _paper_config(_benchmark, _size, (_shot,))
del _benchmark, _size, _shot


def get_config(name_or_path: str, **overrides) -> ExperimentConfig:
    """A preset by name, or a JSON file of `ExperimentConfig` fields, with overrides.

    A JSON file may name a preset to start from: ``{"preset": "cpu-glyphs", "widths": [4, 4, 4, 4]}``;
    without one it starts from the `ExperimentConfig` defaults.
    """
    if name_or_path in PRESETS:
        config = PRESETS[name_or_path]
    elif name_or_path.endswith(".json"):
        with open(name_or_path) as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{name_or_path}: expected a JSON object of config fields.")
        base = values.pop("preset", None)
        if base is not None:
            if base not in PRESETS:
                raise ValueError(f"{name_or_path}: unknown preset '{base}'. Known: {', '.join(PRESETS)}.")
            parsed = ExperimentConfig.from_dict(values)  # unknown keys raise here
            config = PRESETS[base].replace(**{key: getattr(parsed, key) for key in values})
        else:
            config = ExperimentConfig.from_dict(values)
    else:
        raise ValueError(
            f"Unknown config '{name_or_path}': give a preset ({', '.join(PRESETS)}) or a .json file."
        )
    return config.replace(**overrides) if overrides else config


def resolve_config(
    name_or_path: str | None = None,
    run_dir: str | None = None,
    assignments: Sequence[str] = (),
    **fields,
) -> ExperimentConfig:
    """The config a CLI stage runs with, validated.

    Order (later wins): the preset or JSON file ``name_or_path`` — by default
    ``run_dir/config.json`` when it exists (so later stages of a run reuse the
    first stage's settings), else ``"cpu"`` —, then the ``fields`` that are
    not None (e.g. ``benchmark=``, ``root=``, ``seed=``, ``shots=``), then the
    ``"key=value"`` ``assignments``.

    Raises:
        ValueError: unknown preset, key or malformed value, naming it.
        FileNotFoundError: a JSON file that does not exist.
    """
    if name_or_path is None:
        saved = os.path.join(run_dir, "config.json") if run_dir else None
        name_or_path = saved if saved and os.path.exists(saved) else "cpu"
    config = get_config(name_or_path)
    config = config.replace(**{key: value for key, value in fields.items() if value is not None})
    return config.with_overrides(assignments).validate()
