"""The bundled streams as ``dataset`` sections of a recipe: typed parameters, ``write(url)`` fills a store."""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_modyn._checks import check_int
from lightning_modyn.datasets.generator import StreamGenerator


class RotatingDigitsStream(StreamGenerator):
    """Rotating digits (scikit-learn's 8×8 digits, upsampled), drifting in rotation, stroke and class priors.

    Samples are ``{"raw": uint8 image bytes, "cls": label}`` with one timestamp per period of ``period_seconds``;
    see :func:`lightning_modyn.datasets.rotating_digits.rotating_digits_arrays` for every parameter.

    With ``heldout_samples_per_period`` and ``heldout_store``, a held-out stream is written beside it: the same
    periods, drift and shifts, drawn (with another seed) from every fifth source digit, while the training stream
    draws from the other four in five, so no model ever trains on a held-out image or its source. Evaluate on it
    with ``EvaluationDataset("heldout", store=<heldout_store>)``.
    """

    def __init__(self, num_periods: int = 12, samples_per_period: int = 1000, image_size: int = 16, seed: int = 0,
                 rotation_per_period: float = 15.0, rotation_noise: float = 5.0, stroke_per_period: float = 0.0,
                 prior_drift: float = 0.0, abrupt_shifts: list[int] | None = None, shift_kind: str = "invert",
                 new_classes: dict[int, list[int]] | None = None, period_seconds: int = 86400,
                 heldout_samples_per_period: int = 0, heldout_store: str | None = None) -> None:
        check_int("heldout_samples_per_period", heldout_samples_per_period, 0)
        if (heldout_samples_per_period > 0) != (heldout_store is not None):
            raise ValueError("give both heldout_samples_per_period (> 0) and heldout_store, or neither; got "
                             f"{heldout_samples_per_period!r} and {heldout_store!r}")
        self.options = dict(num_periods=num_periods, samples_per_period=samples_per_period, image_size=image_size,
                            seed=seed, rotation_per_period=rotation_per_period, rotation_noise=rotation_noise,
                            stroke_per_period=stroke_per_period, prior_drift=prior_drift,
                            abrupt_shifts=tuple(abrupt_shifts or ()), shift_kind=shift_kind,
                            new_classes=new_classes, period_seconds=period_seconds)
        if heldout_samples_per_period:  # the training stream then leaves the held-out sources out
            self.options["sources"] = "train"
        self.heldout_url = heldout_store
        self._heldout_options = {**self.options, "samples_per_period": heldout_samples_per_period,
                                 "seed": seed + 1_000_003, "sources": "heldout"}

    def write(self, store_or_url: Any) -> np.ndarray:
        from lightning_modyn.datasets.rotating_digits import write_rotating_digits

        return write_rotating_digits(store_or_url, **self.options)

    def write_heldout(self, store_or_url: Any = None) -> np.ndarray:
        from lightning_modyn.datasets.rotating_digits import write_rotating_digits

        return write_rotating_digits(self.heldout_url if store_or_url is None else store_or_url,
                                     **self._heldout_options)

    def describe_heldout(self) -> dict:
        return {**self.describe(), "heldout": dict(self._heldout_options)}

    def timeline(self) -> dict[str, Any]:
        """Days (or periods) from the stream's start; the abrupt shifts and new classes marked."""
        from lightning_modyn.datasets.rotating_digits import rotating_digits_timeline

        return rotating_digits_timeline(**self.options)


class SyntheticClicksStream(StreamGenerator):
    """Criteo-format click rows over ``days`` days, labelled by a known click model that drifts from day to day.

    Drifting categorical popularity, click rate and click model; see
    :func:`lightning_modyn.datasets.clicks.synthetic_clicks_arrays` for every parameter.

    With ``heldout_rows_per_day`` and ``heldout_store``, a held-out stream is written beside it: the same days,
    click model and drift, ``heldout_rows_per_day`` rows a day drawn from another random stream (no model trains
    on them). Evaluate on it with ``EvaluationDataset("heldout", store=<heldout_store>)``.
    """

    def __init__(self, days: int = 7, rows_per_day: int = 10_000, seed: int = 0, drift_per_day: float = 1e-4,
                 ctr_drift_per_day: float = 0.0, concept_drift_per_day: float = 0.0, num_categories: int = 100_000,
                 heldout_rows_per_day: int = 0, heldout_store: str | None = None) -> None:
        check_int("heldout_rows_per_day", heldout_rows_per_day, 0)
        if (heldout_rows_per_day > 0) != (heldout_store is not None):
            raise ValueError("give both heldout_rows_per_day (> 0) and heldout_store, or neither; got "
                             f"{heldout_rows_per_day!r} and {heldout_store!r}")
        self.options = dict(days=days, rows_per_day=rows_per_day, seed=seed, drift_per_day=drift_per_day,
                            ctr_drift_per_day=ctr_drift_per_day, concept_drift_per_day=concept_drift_per_day,
                            num_categories=num_categories)
        from lightning_modyn.datasets.clicks import _days

        _days(**self.options)  # check every argument now, not when the store is written
        self.heldout_url = heldout_store
        self._heldout_options = {**self.options, "rows_per_day": heldout_rows_per_day, "heldout": True}

    def write(self, store_or_url: Any) -> np.ndarray:
        from lightning_modyn.datasets.clicks import write_synthetic_clicks

        return write_synthetic_clicks(store_or_url, **self.options)

    def write_heldout(self, store_or_url: Any = None) -> np.ndarray:
        from lightning_modyn.datasets.clicks import write_synthetic_clicks

        return write_synthetic_clicks(self.heldout_url if store_or_url is None else store_or_url,
                                      **self._heldout_options)

    def describe_heldout(self) -> dict:
        return {**self.describe(), "heldout": dict(self._heldout_options)}

    def timeline(self) -> dict[str, Any]:
        """Days from the stream's start; its drift is gradual, so no shift is marked."""
        from lightning_modyn.datasets.clicks import DAY_SECONDS

        return {"unit": "day", "unit_seconds": DAY_SECONDS, "start": 0, "shifts": []}
