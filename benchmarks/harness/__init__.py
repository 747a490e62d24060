"""Speed benchmarks of mtl_keras against a faithful PyTorch baseline (``benchmarks/benchmark.py``).

`run_suite` measures `BenchConfig`s in isolated worker processes (interleaved with the baseline
and a machine ceiling); `format_report` renders the Markdown table. Not part of the installed
package (``pip install .`` ships ``mtl_keras`` only); nothing in ``mtl_keras`` imports it.
"""

from benchmarks.harness.flops import resnet12_convs, step_flops
from benchmarks.harness.suite import (
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
