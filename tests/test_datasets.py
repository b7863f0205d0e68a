"""Bundled dynamic-data generators: rotating digits (images) and synthetic clicks (Criteo-format records)."""

from __future__ import annotations


import numpy as np
import pytest

from lightning_modyn.datasets.clicks import DAY_SECONDS, synthetic_clicks_arrays, write_synthetic_clicks
from lightning_modyn.datasets.criteo import CRITEO_DTYPE
from lightning_modyn.datasets.rotating_digits import _digits, _render, rotating_digits_arrays, write_rotating_digits
from lightning_modyn.store import SampleStore


SMALL = dict(image_size=16)  # fast; the drift checks hold at 28 pixels too


def digits(num_periods=4, samples_per_period=200, **kwargs):
    return rotating_digits_arrays(num_periods, samples_per_period, **{**SMALL, **kwargs})


def period_means(images, num_periods):
    return images.reshape(num_periods, -1, images.shape[1] * images.shape[2]).astype(np.float64).mean(axis=1)


def corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


# ====================================================================== rotating digits: basics
@pytest.mark.parametrize("size", [16, 28])
def test_digits_shapes_dtypes_and_periods(size):
    images, labels, ts = rotating_digits_arrays(3, 50, image_size=size, period_seconds=1000, start=10_000,
                                                rotation_noise=0)
    assert images.shape == (150, size, size) and images.dtype == np.uint8
    assert labels.shape == (150,) and labels.dtype == np.int64 and set(labels.tolist()) <= set(range(10))
    assert ts.dtype == np.int64 and (np.diff(ts) >= 0).all()
    period = (ts - 10_000) // 1000
    assert period.tolist() == np.repeat(np.arange(3), 50).tolist()
    assert images.max() > 200 and images[:50, [0, -1]].max() == 0  # bright strokes; unrotated: empty border


def test_digits_deterministic_by_seed_and_prefix_stable():
    a = digits(seed=3, prior_drift=0.3, stroke_per_period=0.5, abrupt_shifts=[2])
    b = digits(seed=3, prior_drift=0.3, stroke_per_period=0.5, abrupt_shifts=[2])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    other = digits(seed=4, prior_drift=0.3, stroke_per_period=0.5, abrupt_shifts=[2])
    assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[1], other[1])
    # a period's samples do not depend on how many periods follow
    short = digits(num_periods=2, seed=3, prior_drift=0.3, stroke_per_period=0.5)
    for x, y in zip(short, a):
        np.testing.assert_array_equal(x, y[: len(x)])


def test_digits_rotation_is_counter_clockwise_and_exact():
    sources, _ = _digits()
    four = np.repeat(sources[4:5], 4, axis=0)
    turns = np.deg2rad(np.array([0, 90, 180, 270], np.float32))
    out = _render(four, turns, 28)
    for k in range(1, 4):  # on a square grid a quarter turn only permutes pixels
        np.testing.assert_allclose(out[k], np.rot90(out[0], k), atol=1e-4)
    assert out[0].sum() == pytest.approx(sources[4].sum() * (21 / 8) ** 2, rel=0.1)  # 8 px -> 21 px, ink kept


# ====================================================================== rotating digits: drift
def test_gradual_rotation_lowers_similarity_to_period_zero():
    n = 6
    drifting = period_means(digits(n, 300, rotation_per_period=12)[0], n)
    steady = period_means(digits(n, 300, rotation_per_period=0)[0], n)
    sims = [corr(drifting[0], drifting[p]) for p in range(1, n)]
    assert all(a > b for a, b in zip(sims, sims[1:])), sims  # falls period after period
    assert sims[-1] < 0.7
    assert min(corr(steady[0], steady[p]) for p in range(1, n)) > 0.95  # no drift configured: none seen


def test_stroke_drift_thickens_and_thins():
    n = 4
    ink = lambda **kw: period_means(digits(n, 200, rotation_per_period=0, **kw)[0], n).mean(axis=1)  # noqa: E731
    thick, thin = ink(stroke_per_period=0.75), ink(stroke_per_period=-0.5)
    assert all(np.diff(thick) > 0) and thick[-1] > 1.5 * thick[0]
    assert all(np.diff(thin) < 0) and thin[-1] < 0.7 * thin[0]


def test_prior_drift_shifts_the_class_mix():
    n = 5
    _, labels, _ = digits(n, 2000, prior_drift=0.4)
    freq = np.stack([np.bincount(l, minlength=10) / len(l) for l in labels.reshape(n, -1)])
    logits = 0.4 * np.arange(n)[:, None] * np.linspace(-1, 1, 10)[None, :]  # as documented
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(freq - expected).max() < 0.03
    assert abs(freq[0] - 0.1).max() < 0.03  # period 0 is balanced
    assert all(np.diff(freq[:, 9]) > 0) and freq[-1, 9] > 0.3 and freq[-1, 0] < 0.03


def test_explicit_class_priors_are_followed():
    priors = np.zeros((3, 10))
    priors[0, [0, 1]] = 1  # period 0: only 0 and 1, evenly
    priors[1, 2] = 1  # period 1: only 2
    priors[2] = np.arange(10)  # period 2: proportional to the digit
    _, labels, _ = digits(3, 2000, class_priors=priors)
    per = labels.reshape(3, -1)
    assert set(per[0].tolist()) == {0, 1} and abs((per[0] == 0).mean() - 0.5) < 0.05
    assert set(per[1].tolist()) == {2}
    freq = np.bincount(per[2], minlength=10) / 2000
    assert freq[0] == 0 and np.abs(freq - np.arange(10) / 45).max() < 0.03


def test_new_classes_absent_before_their_period_and_present_after():
    _, labels, ts = digits(5, 300, new_classes={2: [7, 8], 4: 3}, period_seconds=100)
    period = ts // 100
    for cls, first in [(7, 2), (8, 2), (3, 4)]:
        assert not (labels[period < first] == cls).any()
        assert all((labels[period == p] == cls).any() for p in range(first, 5))
    assert set(labels[period == 0].tolist()) == set(range(10)) - {3, 7, 8}


def test_abrupt_inversion_is_sudden():
    n = 5
    images = digits(n, 300, abrupt_shifts=[3], rotation_per_period=5)[0]
    brightness = period_means(images, n).mean(axis=1)
    steps = np.abs(np.diff(brightness))
    assert steps.argmax() == 2 and steps[2] > 10 * np.delete(steps, 2).max()  # the jump is at period 3 only
    assert brightness[3] > 128 > brightness[2]
    back = digits(n, 300, abrupt_shifts=[2, 4], rotation_per_period=5)[0]  # each shift toggles
    b = period_means(back, n).mean(axis=1)
    assert b[0] < 128 and b[1] < 128 and b[2] > 128 and b[3] > 128 and b[4] < 128


def test_abrupt_rotation_is_sudden():
    n = 5
    means = period_means(digits(n, 400, abrupt_shifts=[3], shift_kind="rotate", shift_rotation=90,
                                rotation_per_period=2)[0], n)
    sims = [corr(means[p - 1], means[p]) for p in range(1, n)]  # neighbour periods
    assert int(np.argmin(sims)) == 2 and sims[2] < min(sims[:2] + sims[3:]) - 0.2, sims


# ====================================================================== rotating digits: store
def test_write_rotating_digits_round_trips_through_a_new_store(tmp_path):
    url = str(tmp_path / "digits")
    kwargs = dict(image_size=16, seed=1, prior_drift=0.2, new_classes={1: [5]})
    keys = write_rotating_digits(url, num_periods=3, samples_per_period=100, **kwargs)
    images, labels, ts = rotating_digits_arrays(3, 100, **kwargs)
    assert keys.dtype == np.int64 and keys.tolist() == list(range(300))
    store = SampleStore.open(url, readonly=True)  # closed by the writer: opening by URL works
    raw = store.get_member(keys, "raw").array()
    np.testing.assert_array_equal(raw, images.reshape(300, -1))
    meta = store.lookup(keys)
    np.testing.assert_array_equal(meta.labels, labels)
    np.testing.assert_array_equal(meta.timestamps, ts)
    assert store.label_counts() == {c: int((labels == c).sum()) for c in np.unique(labels).tolist()}
    assert store.get(keys[:1])[0]["cls"] == str(labels[0]).encode()
    assert len(store.time_range(86400, 2 * 86400)) == 100
    store.close()


def test_write_rotating_digits_appends_to_an_open_store(tmp_path):
    store = SampleStore.create(str(tmp_path / "s"))
    first = write_rotating_digits(store, num_periods=1, samples_per_period=20, image_size=16)
    more = write_rotating_digits(store, num_periods=1, samples_per_period=20, image_size=16, seed=1, start=86400)
    assert more.tolist() == list(range(20, 40)) and len(store) == 40  # still open and writable
    assert store.lookup(more).timestamps.min() >= 86400 > store.lookup(first).timestamps.max()
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_periods=0), "num_periods"),
        (dict(samples_per_period=0), "samples_per_period"),
        (dict(samples_per_period=2.5), "samples_per_period"),
        (dict(image_size=4), "image_size"),
        (dict(seed=-1), "seed"),
        (dict(rotation_per_period=float("nan")), "rotation_per_period"),
        (dict(rotation_noise=-1), "rotation_noise"),
        (dict(stroke_per_period="thick"), "stroke_per_period"),
        (dict(prior_drift=float("inf")), "prior_drift"),
        (dict(class_priors=np.ones((2, 10))), "class_priors"),
        (dict(class_priors=-np.ones((4, 10))), "class_priors"),
        (dict(class_priors=np.ones((4, 10)), prior_drift=0.1), "class_priors"),
        (dict(abrupt_shifts=[0]), "abrupt_shifts"),
        (dict(abrupt_shifts=[4]), "abrupt_shifts"),
        (dict(abrupt_shifts=[2, 2]), "abrupt_shifts"),
        (dict(abrupt_shifts=2), "abrupt_shifts"),
        (dict(shift_kind="flip"), "shift_kind"),
        (dict(new_classes={9: [1]}), "new_classes"),
        (dict(new_classes={1: [10]}), "new_classes"),
        (dict(new_classes={1: [1], 2: [1]}), "new_classes"),
        (dict(new_classes={1: list(range(10))}), "new_classes"),
        (dict(new_classes=[1, 2]), "new_classes"),
        (dict(period_seconds=0), "period_seconds"),
    ],
)
def test_bad_digit_arguments_fail_before_writing(tmp_path, kwargs, name):
    base = dict(num_periods=4, samples_per_period=10, image_size=16)
    with pytest.raises(ValueError, match=name):
        rotating_digits_arrays(**{**base, **kwargs})
    url = tmp_path / "never"
    with pytest.raises(ValueError, match=name):
        write_rotating_digits(str(url), **{**base, **kwargs})
    assert not url.exists()  # nothing created


def test_class_priors_must_leave_a_present_class():
    priors = np.zeros((2, 10))
    priors[:, 3] = 1
    with pytest.raises(ValueError, match="class_priors.*period 0"):
        rotating_digits_arrays(2, 10, class_priors=priors, new_classes={1: [3]})


# ====================================================================== synthetic clicks
def test_clicks_shapes_dtypes_and_days():
    rows, ts = synthetic_clicks_arrays(days=3, rows_per_day=2000, start=1_700_000_000)
    assert rows.dtype == CRITEO_DTYPE and rows.shape == (6000,)
    assert ts.dtype == np.int64 and (np.diff(ts) >= 0).all()
    day = (ts - 1_700_000_000) // DAY_SECONDS
    assert day.tolist() == np.repeat(np.arange(3), 2000).tolist()
    assert set(np.unique(rows["label"]).tolist()) == {0, 1}
    assert rows["cat"].min() >= 0 and rows["cat"].max() < 100_000


def test_clicks_deterministic_by_seed_and_prefix_stable():
    a = synthetic_clicks_arrays(days=3, rows_per_day=1000, seed=2, ctr_drift_per_day=0.5)
    b = synthetic_clicks_arrays(days=3, rows_per_day=1000, seed=2, ctr_drift_per_day=0.5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = synthetic_clicks_arrays(days=3, rows_per_day=1000, seed=3, ctr_drift_per_day=0.5)
    assert not np.array_equal(a[0]["cat"], c[0]["cat"])
    short = synthetic_clicks_arrays(days=2, rows_per_day=1000, seed=2, ctr_drift_per_day=0.5)
    np.testing.assert_array_equal(short[0], a[0][:2000])


def test_clicks_popularity_drifts():
    days = 6
    rows, _ = synthetic_clicks_arrays(days=days, rows_per_day=20_000, drift_per_day=1e-4)
    cats = rows["cat"][:, 0].reshape(days, -1)
    top = np.arange(50)  # day 0's 50 most popular ids (ids are popularity ranks before any drift)
    share = [float(np.isin(cats[d], top).mean()) for d in range(days)]
    assert all(a > b for a, b in zip(share, share[1:])) and share[-1] < 0.75 * share[0], share
    still, _ = synthetic_clicks_arrays(days=days, rows_per_day=5000, drift_per_day=0.0)
    cats = still["cat"][:, 0].reshape(days, -1)
    still_share = [float(np.isin(cats[d], top).mean()) for d in range(days)]
    assert max(still_share) - min(still_share) < 0.04


def test_clicks_which_ids_draw_clicks_stay_with_the_ids_unless_the_click_model_drifts():
    # an id's click effect is its own: popularity drift moves ids through the ranks, concept drift changes effects
    def click_rates(concept_drift_per_day):
        rows, ts = synthetic_clicks_arrays(days=2, rows_per_day=40_000, drift_per_day=2e-5,
                                           concept_drift_per_day=concept_drift_per_day)
        cats, clicks, day = rows["cat"][:, 0], rows["label"], ts // DAY_SECONDS
        ids = np.arange(2, 32)  # popular on both days (ranks 2..31 on day 0, 0..29 on day 1)
        return [np.array([clicks[(day == d) & (cats == i)].mean() for i in ids]) for d in (0, 1)]

    still = np.corrcoef(*click_rates(0.0))[0, 1]
    turned = np.corrcoef(*click_rates(1.0))[0, 1]  # phase 1 a day: an unrelated click model every day
    assert still > 0.7 and turned < still - 0.5, (still, turned)


@pytest.mark.parametrize("drift", [0.5, -0.5])
def test_clicks_rate_drifts_as_configured(drift):
    days = 4
    rows, _ = synthetic_clicks_arrays(days=days, rows_per_day=8000, ctr_drift_per_day=drift, drift_per_day=0)
    ctr = rows["label"].reshape(days, -1).mean(axis=1)
    assert all(np.diff(ctr) * np.sign(drift) > 0), ctr
    # the log-odds move by about drift per day (exact for the conditional odds; close for the marginal rate)
    logodds = np.log(ctr / (1 - ctr))
    assert abs((logodds[-1] - logodds[0]) / (days - 1) - drift) < 0.2 * abs(drift) + 0.05


def test_write_synthetic_clicks_round_trips(tmp_path):
    url = str(tmp_path / "clicks")
    keys = write_synthetic_clicks(url, days=3, rows_per_day=700, seed=4, ctr_drift_per_day=0.2)
    rows, ts = synthetic_clicks_arrays(days=3, rows_per_day=700, seed=4, ctr_drift_per_day=0.2)
    store = SampleStore.open(url, readonly=True)
    assert store.record_dtype == CRITEO_DTYPE and keys.tolist() == list(range(2100))
    np.testing.assert_array_equal(store.get_records(keys), rows)
    meta = store.lookup(keys)
    np.testing.assert_array_equal(meta.labels, rows["label"])
    np.testing.assert_array_equal(meta.timestamps, ts)
    assert len(store.time_range(DAY_SECONDS, 2 * DAY_SECONDS)) == 700
    store.close()


def test_write_synthetic_clicks_appends_to_an_open_store(tmp_path):
    store = SampleStore.create(str(tmp_path / "s"))  # no record dtype yet: the first append sets it
    write_synthetic_clicks(store, days=1, rows_per_day=100)
    more = write_synthetic_clicks(store, days=1, rows_per_day=100, seed=1, start=DAY_SECONDS)
    assert more.tolist() == list(range(100, 200)) and len(store) == 200
    store.close()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(days=0), "days"),
        (dict(rows_per_day=-5), "rows_per_day"),
        (dict(rows_per_day=1.5), "rows_per_day"),
        (dict(seed=-1), "seed"),
        (dict(drift_per_day=float("nan")), "drift_per_day"),
        (dict(ctr_drift_per_day="up"), "ctr_drift_per_day"),
        (dict(concept_drift_per_day=float("inf")), "concept_drift_per_day"),
        (dict(heldout="yes"), "heldout"),
        (dict(num_categories=1), "num_categories"),
        (dict(start=1.5), "start"),
    ],
)
def test_bad_click_arguments_fail_before_writing(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_clicks_arrays(**kwargs)
    url = tmp_path / "never"
    with pytest.raises(ValueError, match=name):
        write_synthetic_clicks(str(url), **kwargs)
    assert not url.exists()
