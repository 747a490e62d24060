"""Benchmarks of mtl_keras and their harness; not part of the installed package."""
