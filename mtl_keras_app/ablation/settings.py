"""What the ablation runs: the rows, the paper's claims, and `ReproduceSettings`
(an `ExperimentConfig` plus the rows' own settings), with the ``--quick`` changes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mtl_keras_app.config import ExperimentConfig, get_config

#: The rows, in the order of the table.
ROWS = ("scratch", "pretrained", "simpleshot_l2n", "simpleshot", "ft", "ss", "ss_ht")
#: The rows that always run (no meta-training): the pretrained backbone with the inner loop, and
#: nearest centroid on its features (SimpleShot L2N and CL2N), on the same episodes.
BASELINE_ROWS = ("pretrained", "simpleshot_l2n", "simpleshot")
#: Short names for plots and the paired comparisons.
SHORT = {
    "scratch": "scratch Conv-4",
    "pretrained": "pretrained",
    "simpleshot_l2n": "SimpleShot L2N",
    "simpleshot": "SimpleShot CL2N",
    "ft": "FT",
    "ss": "SS",
    "ss_ht": "SS+HT",
}
#: The paper's ordering, as pairs (better, worse), with what each pair tests.
CLAIMS = (
    ("ss_ht", "ss", "HT adds on top of SS"),
    ("ss", "ft", "SS beats FT (meta-training all weights)"),
    ("ss", "scratch", "SS beats shallow meta-learning from scratch"),
    ("ft", "scratch", "FT (deep, pretrained) beats shallow from scratch"),
    ("ss", "pretrained", "meta-training SS improves on the pretrained backbone"),
    ("ft", "pretrained", "meta-training FT improves on the pretrained backbone"),
    ("ss", "simpleshot", "meta-training SS beats nearest centroid on the pretrained features"),
    ("ss", "simpleshot_l2n", "meta-training SS beats nearest centroid on the pretrained features"),
    ("ft", "simpleshot", "meta-training FT beats nearest centroid on the pretrained features"),
)
#: Paper numbers (miniImageNet 5-way 1-shot, mean ± 95% CI, Sun et al., CVPR 2019,
#: as quoted by the project; not re-checked against the PDF here).
PAPER_MINI_IMAGENET_1SHOT = {
    "SS + HT (MTL, ResNet-12)": "61.2 ± 1.8",
    "SS (MTL, ResNet-12)": "60.2 ± 1.8",
    "FT + HT (ResNet-12)": "59.1 ± 1.9",
    "MAML + HT (4 conv layers)": "49.1 ± 1.9",
}

#: The default reproduction config: `cpu-glyphs` with 600 validation episodes (cheap on
#: cached embeddings; 100 gave a ±1-point CI, too coarse to pick an epoch at ~98%).
DEFAULT_CONFIG_CHANGES = {"val_episodes": 600}
#: ``--quick`` (≤ 5 minutes on 2 CPU cores): small images and backbone, short runs.
QUICK_CONFIG_CHANGES = {
    "image_size": 16,
    "widths": (8, 16, 32, 64),
    "pretrain_epochs": 4,
    "pretrain_batch_size": 128,
    "meta_epochs": 2,
    "steps_per_epoch": 10,
    "inner_steps": 10,
    "eval_inner_steps": 50,
    "val_episodes": 200,
    "test_episodes": 200,
}
QUICK_SETTINGS_CHANGES = {
    "scratch_filters": 16,
    "scratch_epochs": 2,
    "scratch_steps_per_epoch": 20,
    "ft_lrs": (3e-4, 3e-5),
    "ft_probe_steps": 10,
}


def default_config() -> ExperimentConfig:
    """`cpu-glyphs` with `DEFAULT_CONFIG_CHANGES`."""
    return get_config("cpu-glyphs").replace(**DEFAULT_CONFIG_CHANGES)


@dataclasses.dataclass
class ReproduceSettings:
    """What `reproduce` runs: an `ExperimentConfig` plus the rows' own settings.

    Attributes:
        config: benchmark, backbone, pretraining, meta-training (``meta_epochs`` ×
            ``steps_per_epoch`` for rows 3-5), ``ways``, ``shots``, inner loop,
            ``val_episodes``, ``test_episodes``, ``seed``; ``ht_every``, ``ht_hard_batches``:
            the periodic hard-task schedule of row 5 (paper: after every 10 meta-batches,
            5 meta-batches of hard tasks).
        scratch_filters: channels of the scratch Conv-4 (MAML on miniImageNet: 32).
        scratch_epochs, scratch_steps_per_epoch: meta-training of the scratch row
            (it has no pretraining, so it gets more steps than rows 3-5).
        scratch_lr: Adam rate of all scratch weights and its head init (MAML: 1e-3).
        ft_lrs: candidate Adam rates of the FT row's weights, chosen on validation.
        ft_probe_steps: meta-training steps of each FT candidate (0: take the first).
        hard_ways: ways of the harder extra setting (0: none); evaluated with the
            models meta-trained at ``config.ways``.
        eval_chunk: episodes adapted per call on cached embeddings (speed only).
        rows: the meta-trained rows to run, of ``scratch``, ``ft``, ``ss``, ``ss_ht``
            (``pretrained`` and the SimpleShot rows always run: they are the baselines).
        episode_seed: seed of the validation (``episode_seed + 1``) and test
            (``episode_seed + 100``) episodes; -1: the config's ``seed``. `reproduce_seeds`
            fixes it, so that every training seed is tested on the same episodes.
    """

    config: ExperimentConfig = dataclasses.field(default_factory=default_config)
    scratch_filters: int = 32
    scratch_epochs: int = 5
    scratch_steps_per_epoch: int = 100
    scratch_lr: float = 1e-3
    ft_lrs: tuple[float, ...] = (3e-4, 1e-4, 3e-5)
    ft_probe_steps: int = 30
    hard_ways: int = 20
    eval_chunk: int = 50
    rows: tuple[str, ...] = ("scratch", "ft", "ss", "ss_ht")
    episode_seed: int = -1

    def replace(self, **changes) -> ReproduceSettings:
        """A copy with ``changes``: settings fields, or `ExperimentConfig` fields (go to ``config``)."""
        own = {f.name for f in dataclasses.fields(self)} - {"config"}
        config_changes = {k: v for k, v in changes.items() if k not in own}
        settings = dataclasses.replace(self, **{k: v for k, v in changes.items() if k in own})
        if config_changes:
            settings = dataclasses.replace(settings, config=settings.config.replace(**config_changes))
        return settings

    def quick(self) -> ReproduceSettings:
        """The ``--quick`` version (`QUICK_CONFIG_CHANGES`, `QUICK_SETTINGS_CHANGES`)."""
        return self.replace(**QUICK_CONFIG_CHANGES, **QUICK_SETTINGS_CHANGES)

    def with_overrides(self, assignments: Sequence[str]) -> ReproduceSettings:
        """Apply ``["key=value", ...]`` to settings fields or config fields (the CLI's ``--set``)."""
        own = {f.name: str(f.type) for f in dataclasses.fields(self) if f.name != "config"}
        changes, config_assignments = {}, []
        for item in assignments:
            key, sep, text = item.partition("=")
            key = key.strip()
            if key not in own:
                config_assignments.append(item)
                continue
            try:
                if key == "rows":
                    changes[key] = tuple(v for v in text.replace(",", " ").split() if v)
                elif own[key].startswith("tuple"):
                    changes[key] = tuple(float(v) for v in text.strip("()[] ").replace(",", " ").split())
                elif own[key] == "int":
                    changes[key] = int(text)
                else:
                    changes[key] = float(text)
            except ValueError:
                raise ValueError(f"Setting '{key}' expects {own[key]}, got {text!r}.") from None
        settings = dataclasses.replace(self, **changes)
        return dataclasses.replace(settings, config=settings.config.with_overrides(config_assignments))

    def validate(self) -> ReproduceSettings:
        """Check the config and the row settings; return ``self``."""
        self.config.validate()
        for key in (
            "scratch_filters",
            "scratch_epochs",
            "scratch_steps_per_epoch",
            "eval_chunk",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"Setting '{key}' must be an int >= 1, got {getattr(self, key)!r}.")
        trained = [r for r in ROWS if r not in BASELINE_ROWS]
        unknown = [r for r in self.rows if r not in trained]
        if unknown or not self.rows:
            raise ValueError(
                f"Setting 'rows' takes one or more of {', '.join(trained)} (pretrained and SimpleShot always "
                f"run), got {list(self.rows)!r}."
            )
        if self.ft_probe_steps < 0:
            raise ValueError(f"Setting 'ft_probe_steps' must be >= 0, got {self.ft_probe_steps}.")
        if not self.ft_lrs or any(not (lr > 0) for lr in self.ft_lrs):
            raise ValueError(f"Setting 'ft_lrs' must be positive rates, got {self.ft_lrs!r}.")
        if not self.scratch_lr > 0:
            raise ValueError(f"Setting 'scratch_lr' must be positive, got {self.scratch_lr!r}.")
        if self.hard_ways and self.hard_ways <= self.config.ways:
            raise ValueError(
                f"Setting 'hard_ways' must be 0 or more than ways={self.config.ways}, got {self.hard_ways}."
            )
        return self

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["config"] = self.config.to_dict()
        return values


def resolve_settings(
    name_or_path: str | None = None,
    quick: bool = False,
    rows: Sequence[str] | None = None,
    assignments: Sequence[str] = (),
    **fields,
) -> ReproduceSettings:
    """The settings ``mtl-keras reproduce`` runs with, validated.

    Order (later wins): the preset or JSON file ``name_or_path`` (default: `default_config`),
    ``quick`` (`ReproduceSettings.quick`), the ``fields`` that are not None (e.g. ``benchmark=``,
    ``root=``, ``allow_pickle=``, ``seed=``, ``shots=``), ``rows`` (if given), then the
    ``"key=value"`` ``assignments`` (settings or config fields).
    """
    config = get_config(name_or_path) if name_or_path else default_config()
    settings = ReproduceSettings(config=config)
    if quick:
        settings = settings.quick()
    settings = settings.replace(**{k: v for k, v in fields.items() if v is not None})
    if rows:
        settings = settings.replace(rows=tuple(rows))
    return settings.with_overrides(assignments or ()).validate()
