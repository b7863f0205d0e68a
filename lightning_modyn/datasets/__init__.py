"""Bundled generators of dynamic data, deterministic by seed, for recipes, tests and benchmarks."""

from lightning_modyn.datasets.criteo import CRITEO_DTYPE, synthetic_criteo_rows

__all__ = ["CRITEO_DTYPE", "synthetic_criteo_rows"]
