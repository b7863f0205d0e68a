"""Bundled generators of dynamic data, deterministic by seed, for recipes, tests and benchmarks."""

from lightning_modyn.datasets.clicks import synthetic_clicks_arrays, write_synthetic_clicks
from lightning_modyn.datasets.criteo import CRITEO_DTYPE, synthetic_criteo_rows
from lightning_modyn.datasets.rotating_digits import rotating_digits_arrays, write_rotating_digits

__all__ = ["CRITEO_DTYPE", "rotating_digits_arrays", "synthetic_clicks_arrays", "synthetic_criteo_rows",
           "write_rotating_digits", "write_synthetic_clicks"]
