"""Benchmark data sources: one module per benchmark, each exposing `load(root, ...) -> (train, val, test)`."""
