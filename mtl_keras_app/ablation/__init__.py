"""The paper's ablation on one benchmark: scratch, pretrained, FT, SS and SS + HT.

`reproduce` runs five rows on one benchmark (default: the embedded glyphs) and writes
``RESULTS.md``, ``results.json`` and plots into an output folder::

    (1) scratch     Conv-4 from random initialisation, *all* weights meta-trained
                    (MAML-style: the inner loop adapts the linear head only)
    (2) pretrained  the pretrained backbone + the inner loop, no meta-training
    (3) FT          the pretrained backbone, all its weights meta-trained
    (4) SS          MTL: only the scaling-and-shifting weights Φ (and the head init)
    (5) SS + HT     MTL with the hard-task meta-batch (`HardTaskPool`, periodic)

Every row is evaluated N-way 1-shot and 5-shot (the config's ``ways`` and ``shots``) on
the *same* test episodes (one sampler seed), mean ± 95% CI, plus a harder setting
(``hard_ways``-way, default 20) from the same models, paired differences between the
rows (same episodes, so the per-episode differences give a much tighter CI than two
overlapping CIs) and the accuracy after every inner step. One pretraining is shared by
rows 2-5: its backbone weights are saved once and loaded afresh for each row.

What is chosen, and where (never on the test split):

* the training epoch of each meta-trained row: the epoch (0..E; 0 = before meta-training,
  earlier on ties: `mtl_keras.evaluation.kept_epoch`, the library's one rule) with the best
  mean accuracy over ``val_episodes`` validation episodes;
* the FT learning rate: a short probe (``ft_probe_steps`` meta-training steps of the
  first shot setting) per candidate in ``ft_lrs``, scored on the same validation
  episodes;
* the rest comes from the config preset (``cpu-glyphs``: its inner-loop and head rates
  were chosen on the validation split, see ``benchmarks/probes/select_cpu_glyphs.py``), and the
  scratch row uses MAML's meta learning rate (Adam 1e-3) for all weights.

Evaluation is the library's one path, `evaluate_episodes` on *cached embeddings*: with batch
norm frozen (inference statistics, the default of `MetaTransferModel`) an image's embedding
does not depend on the other images of its episode, so each split is embedded once per model
(`embed_split`) and every setting's episodes run their inner loops on gathered features.

Example:
    >>> settings = ReproduceSettings()                    # glyphs, cpu-glyphs preset
    >>> summary = reproduce(settings, "runs/reproduce-glyphs")
    >>> print(summary["tables"]["main"])

Reference:
    Sun et al., "Meta-Transfer Learning for Few-Shot Learning", CVPR 2019, §5.2 (ablation);
    Sun et al., "Meta-Transfer Learning through Hard Tasks", TPAMI 2020.

The package, by concern:

* `settings`: `ROWS`, `SHORT`, `CLAIMS`, `ReproduceSettings`, `default_config`,
  `resolve_settings` (what ``mtl-keras reproduce`` runs with).
* `features`: `evaluate_model` (`evaluate_episodes` on a row's shared embeddings) and
  `EpisodeValidation` (the kept epoch).
* `rows`: `build_row_model`, `meta_train_row`.
* `run`: `reproduce`, the whole run on one benchmark.
* `seeds`: `reproduce_seeds` and ``SEEDS.md`` (`seeds_report`).
* `report`: ``RESULTS.md``, its tables and the plots (`write_results_md`, `write_plots`,
  `rewrite_report`).
"""

# The episode tools the ablation evaluates with (`mtl_keras.evaluation`), importable from here as before.
from mtl_keras.evaluation import EpisodeSet, draw_episodes, embed_split, paired_difference
from mtl_keras_app.ablation.features import EpisodeValidation, evaluate_model
from mtl_keras_app.ablation.report import (
    format_results_table,
    results_from_summary,
    rewrite_report,
    row_label,
    verdict,
    write_plots,
    write_results_md,
)
from mtl_keras_app.ablation.rows import build_row_model, meta_train_row
from mtl_keras_app.ablation.run import reproduce, same_settings_but_rows, setting_name
from mtl_keras_app.ablation.seeds import SEED_TARGETS, reproduce_seeds, seeds_report
from mtl_keras_app.ablation.settings import (
    CLAIMS,
    DEFAULT_CONFIG_CHANGES,
    PAPER_MINI_IMAGENET_1SHOT,
    QUICK_CONFIG_CHANGES,
    QUICK_SETTINGS_CHANGES,
    ROWS,
    SHORT,
    ReproduceSettings,
    default_config,
    resolve_settings,
)

__all__ = [
    "CLAIMS",
    "DEFAULT_CONFIG_CHANGES",
    "PAPER_MINI_IMAGENET_1SHOT",
    "QUICK_CONFIG_CHANGES",
    "QUICK_SETTINGS_CHANGES",
    "ROWS",
    "SEED_TARGETS",
    "SHORT",
    "EpisodeSet",
    "EpisodeValidation",
    "ReproduceSettings",
    "build_row_model",
    "default_config",
    "draw_episodes",
    "embed_split",
    "evaluate_model",
    "format_results_table",
    "meta_train_row",
    "paired_difference",
    "reproduce",
    "reproduce_seeds",
    "resolve_settings",
    "results_from_summary",
    "rewrite_report",
    "row_label",
    "same_settings_but_rows",
    "seeds_report",
    "setting_name",
    "verdict",
    "write_plots",
    "write_results_md",
]
