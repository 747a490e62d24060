"""Speed benchmarks of mtl_keras against a faithful PyTorch baseline (``scripts/benchmark.py``).

`run_suite` measures `BenchConfig`s in isolated worker processes (interleaved with the baseline
and a machine ceiling); `format_report` renders the Markdown table. Nothing here is imported by
the rest of the package.
"""

from mtl_keras.benchmarking.flops import resnet12_convs, step_flops
from mtl_keras.benchmarking.suite import (
    BenchConfig,
    check_targets,
    cost_scaling,
    default_configs,
    full_configs,
    grid,
    quick_configs,
    run_suite,
)

__all__ = [
    "BenchConfig",
    "check_targets",
    "cost_scaling",
    "default_configs",
    "full_configs",
    "grid",
    "quick_configs",
    "resnet12_convs",
    "run_suite",
    "step_flops",
]
