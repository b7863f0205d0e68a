"""Rotating digits: a Yearbook-like image stream with configurable drift, built offline from 8×8 digits.

Each period (a "year") draws ``samples_per_period`` handwritten digits from scikit-learn's bundled copy of the
UCI optical-digits set (1,797 images, no download), upsamples them to ``image_size`` pixels and changes them
over time: the digits turn (``rotation_per_period``), their strokes thicken or thin (``stroke_per_period``),
the class mix shifts (``prior_drift`` or explicit ``class_priors``), some classes appear only from a given
period on (``new_classes``), and at chosen periods something changes suddenly (``abrupt_shifts``: the
contrast inverts or the digits jump by ``shift_rotation`` degrees). Everything is deterministic by ``seed``,
and a period's samples do not depend on how many periods follow (a 5-period stream starts with the 3-period
one).

:func:`rotating_digits_arrays` returns the stream as arrays; :func:`write_rotating_digits` appends it to a
:class:`~lightning_modyn.store.SampleStore`, one sample per image with the grayscale bytes in member
``"raw"`` (read them with ``ArrayMember("raw", [image_size, image_size])``) and the digit as label.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from lightning_modyn._checks import check_choice, check_int

NUM_CLASSES = 10
"""Digits 0–9."""

SHIFT_KINDS = ("invert", "rotate")
"""What an abrupt shift does: invert the contrast (toggles at each shift) or turn the digits by ``shift_rotation``."""

_FILL = 0.75  # the 8×8 source covers the central 75% of the output, so rotated digits stay inside the frame


def rotating_digits_arrays(
    num_periods: int = 10,
    samples_per_period: int = 1000,
    *,
    image_size: int = 28,
    seed: int = 0,
    rotation_per_period: float = 15.0,
    rotation_noise: float = 5.0,
    stroke_per_period: float = 0.0,
    prior_drift: float = 0.0,
    class_priors: Any = None,
    abrupt_shifts: Sequence[int] = (),
    shift_kind: str = "invert",
    shift_rotation: float = 90.0,
    new_classes: Mapping[int, Sequence[int]] | None = None,
    period_seconds: int = 86400,
    start: int = 0,
    sources: str = "all",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rotating-digits stream as arrays: ``(images, labels, timestamps)``, in time order.

    Parameters
    ----------
    num_periods
        Number of periods (>= 1).
    samples_per_period
        Images per period (>= 1).
    image_size
        Side of the square output images in pixels (>= 8; 16 and 28 are typical). The 8×8 source is
        upsampled bilinearly into the central 75% of the frame.
    seed
        Random seed (>= 0); the same arguments give the same stream.
    rotation_per_period
        Gradual drift: degrees (counter-clockwise) the digits turn per period; period ``p`` is turned by
        ``p * rotation_per_period``.
    rotation_noise
        Standard deviation in degrees (>= 0) of each image's own random rotation on top of its period's.
    stroke_per_period
        Gradual drift of stroke width: grayscale dilations per period (negative: erosions); fractions blend
        between whole steps. Period ``p`` gets ``p * stroke_per_period``.
    prior_drift
        Class-prior drift: at period ``p`` class ``c`` has log-odds ``prior_drift * p * z_c`` with ``z_c``
        running linearly from -1 (digit 0) to +1 (digit 9); 0 keeps the classes balanced.
    class_priors
        Instead of ``prior_drift``: explicit class weights, shape ``(num_periods, 10)``, non-negative; each row
        is normalised over the classes present in that period.
    abrupt_shifts
        Periods (1 .. num_periods-1) at which a sudden change of kind ``shift_kind`` happens.
    shift_kind
        ``"invert"``: each shift toggles inverted contrast from that period on; ``"rotate"``: each shift turns
        all later digits by a further ``shift_rotation`` degrees.
    shift_rotation
        Degrees added at every ``"rotate"`` shift.
    new_classes
        ``{period: [classes]}``: classes that appear only from that period on (absent before).
    period_seconds
        Length of a period in seconds (>= 1): period ``p`` spans
        ``[start + p * period_seconds, start + (p + 1) * period_seconds)``.
    start
        Timestamp (e.g. unix seconds) at which period 0 begins.
    sources
        Which of the 1,797 source digits images are drawn from: ``"all"``; ``"train"`` (four in five) or
        ``"heldout"`` (the fifth: every fifth source, by position), so that a held-out stream shares no source
        image with a training stream.

    Returns
    -------
    images
        ``uint8`` array ``(N, image_size, image_size)``, ``N = num_periods * samples_per_period``; white digits
        on black (unless inverted by a shift).
    labels
        ``int64`` digits ``(N,)``.
    timestamps
        ``int64`` ``(N,)``, non-decreasing, each inside its period.

    Examples
    --------
    >>> images, labels, ts = rotating_digits_arrays(3, 100, image_size=16, new_classes={2: [7]})
    >>> images.shape, images.dtype, labels.shape
    ((300, 16, 16), dtype('uint8'), (300,))
    >>> sorted(set((ts // 86400).tolist()))
    [0, 1, 2]
    >>> bool((labels[ts < 2 * 86400] == 7).any()), bool((labels[ts >= 2 * 86400] == 7).any())
    (False, True)

    References
    ----------
    Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning Repository, 1998.
    Yao et al., "Wild-Time: A Benchmark of in-the-Wild Distribution Shift over Time", NeurIPS 2022 (Yearbook).
    """
    config = _Config.make(num_periods=num_periods, samples_per_period=samples_per_period, image_size=image_size,
                          seed=seed, rotation_per_period=rotation_per_period, rotation_noise=rotation_noise,
                          stroke_per_period=stroke_per_period, prior_drift=prior_drift, class_priors=class_priors,
                          abrupt_shifts=abrupt_shifts, shift_kind=shift_kind, shift_rotation=shift_rotation,
                          new_classes=new_classes, period_seconds=period_seconds, start=start, sources=sources)
    parts = list(config.periods())
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))  # type: ignore[return-value]


def write_rotating_digits(store_or_url: Any, num_periods: int = 10, samples_per_period: int = 1000,
                          **options: Any) -> np.ndarray:
    """Append the rotating-digits stream to a store, one period per append; returns the new keys.

    Parameters
    ----------
    store_or_url
        A writable :class:`~lightning_modyn.store.SampleStore`, or a URL/path at which a new store is created
        (and closed again after writing, so that it can be opened by URL).
    num_periods, samples_per_period, **options
        As for :func:`rotating_digits_arrays` (``image_size``, ``seed``, ``rotation_per_period``, ...). Every
        argument is checked before anything is created or written.

    Returns
    -------
    keys
        ``int64`` store keys, one per image, in the order of :func:`rotating_digits_arrays`. Each sample holds
        ``"raw"`` (``image_size * image_size`` grayscale bytes) and ``"cls"`` (the digit, also the catalog
        label); its timestamp is the array's.

    Examples
    --------
    >>> import tempfile
    >>> from lightning_modyn.store import SampleStore
    >>> url = tempfile.mkdtemp() + "/digits"
    >>> keys = write_rotating_digits(url, num_periods=2, samples_per_period=50, image_size=16)
    >>> store = SampleStore.open(url, readonly=True)
    >>> len(store), store.get_member(keys[:3], "raw").array().shape
    (100, (3, 256))
    >>> images, labels, ts = rotating_digits_arrays(2, 50, image_size=16)
    >>> bool((store.get_member(keys, "raw").array() == images.reshape(100, -1)).all())
    True
    >>> store.lookup(keys).labels.tolist() == labels.tolist()
    True

    References
    ----------
    Yao et al., "Wild-Time: A Benchmark of in-the-Wild Distribution Shift over Time", NeurIPS 2022 (Yearbook).
    """
    config = _Config.make(num_periods=num_periods, samples_per_period=samples_per_period, **options)
    from lightning_modyn.store import SampleStore

    owned = not isinstance(store_or_url, SampleStore)
    store = SampleStore.create(store_or_url) if owned else store_or_url
    try:
        keys = []
        for images, labels, timestamps in config.periods():
            samples = [{"raw": image.tobytes(), "cls": int(label)} for image, label in zip(images, labels)]
            keys.append(store.append(samples, timestamps=timestamps, labels="cls"))
        return np.concatenate(keys)
    finally:
        if owned:
            store.close()


def rotating_digits_timeline(num_periods: int = 10, samples_per_period: int = 1000, **options: Any) -> dict:
    """How to read the stream's timestamps: its unit (a day, or a period of another length), its start, and its
    abrupt distribution shifts and new classes as ``{"at": timestamp, "label": what changed}``.

    >>> rotating_digits_timeline(12, abrupt_shifts=[8], new_classes={3: [7]})["shifts"]
    [{'at': 259200, 'label': 'class 7 appears'}, {'at': 691200, 'label': 'contrast inverted'}]
    """
    config = _Config.make(num_periods=num_periods, samples_per_period=samples_per_period, **options)
    what = "contrast inverted" if config.shift_kind == "invert" else f"rotated {config.shift_rotation:g}°"
    shifts = [(p, what) for p in config.abrupt_shifts]
    present = config.priors > 0
    for p in range(1, config.num_periods):
        new = np.flatnonzero(present[p] & ~present[:p].any(axis=0))
        if len(new):
            shifts.append((p, f"class{'es' if len(new) > 1 else ''} {', '.join(map(str, new))} "
                              f"appear{'' if len(new) > 1 else 's'}"))
    day = config.period_seconds == 86400
    return {"unit": "day" if day else "period", "unit_seconds": config.period_seconds, "start": config.start,
            "shifts": [{"at": config.start + p * config.period_seconds, "label": label}
                       for p, label in sorted(shifts)]}


# ====================================================================== configuration
@dataclass(frozen=True)
class _Config:
    num_periods: int
    samples_per_period: int
    image_size: int
    seed: int
    rotation_per_period: float
    rotation_noise: float
    stroke_per_period: float
    priors: np.ndarray  # (num_periods, NUM_CLASSES), rows sum to 1, zero where a class is not present yet
    abrupt_shifts: tuple[int, ...]
    shift_kind: str
    shift_rotation: float
    period_seconds: int
    start: int
    sources: str = "all"

    @classmethod
    def make(cls, num_periods: int = 10, samples_per_period: int = 1000, image_size: int = 28, seed: int = 0,
             rotation_per_period: float = 15.0, rotation_noise: float = 5.0, stroke_per_period: float = 0.0,
             prior_drift: float = 0.0, class_priors: Any = None, abrupt_shifts: Sequence[int] = (),
             shift_kind: str = "invert", shift_rotation: float = 90.0,
             new_classes: Mapping[int, Sequence[int]] | None = None, period_seconds: int = 86400,
             start: int = 0, sources: str = "all") -> "_Config":
        num_periods = check_int("num_periods", num_periods, 1)
        samples_per_period = check_int("samples_per_period", samples_per_period, 1)
        image_size = check_int("image_size", image_size, 8, hint="(16 or 28 are typical)")
        seed = check_int("seed", seed, 0)
        period_seconds = check_int("period_seconds", period_seconds, 1)
        start = check_int("start", start)
        rotation_per_period = _float("rotation_per_period", rotation_per_period)
        rotation_noise = _float("rotation_noise", rotation_noise, 0.0)
        stroke_per_period = _float("stroke_per_period", stroke_per_period)
        prior_drift = _float("prior_drift", prior_drift)
        shift_rotation = _float("shift_rotation", shift_rotation)
        check_choice("shift_kind", shift_kind, SHIFT_KINDS)
        check_choice("sources", sources, SOURCES)
        shifts = _abrupt_shifts(abrupt_shifts, num_periods)
        present = _presence(new_classes, num_periods)
        priors = _priors(prior_drift, class_priors, present, num_periods)
        return cls(num_periods, samples_per_period, image_size, seed, rotation_per_period, rotation_noise,
                   stroke_per_period, priors, shifts, shift_kind, shift_rotation, period_seconds, start, sources)

    def periods(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(images, labels, timestamps)`` of each period in turn."""
        sources, targets = _digits()
        kept = source_split(len(targets), self.sources)
        by_class = [kept[targets[kept] == c] for c in range(NUM_CLASSES)]
        n = self.samples_per_period
        for p in range(self.num_periods):
            rng = np.random.default_rng([self.seed, p])  # per period: a prefix of periods never changes
            labels = rng.choice(NUM_CLASSES, size=n, p=self.priors[p]).astype(np.int64)
            picks = np.empty(n, np.int64)
            for c in np.unique(labels):
                where = labels == c
                picks[where] = rng.choice(by_class[c], size=int(where.sum()))
            shifts_so_far = sum(1 for q in self.abrupt_shifts if q <= p)
            degrees = p * self.rotation_per_period + rng.normal(0.0, self.rotation_noise, n)
            if self.shift_kind == "rotate":
                degrees += shifts_so_far * self.shift_rotation
            images = _render(sources[picks], np.deg2rad(degrees).astype(np.float32), self.image_size)
            images = _stroke(images, p * self.stroke_per_period)
            if self.shift_kind == "invert" and shifts_so_far % 2:
                images = 1.0 - images
            images = np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
            offsets = np.sort(rng.integers(0, self.period_seconds, n))
            timestamps = self.start + p * self.period_seconds + offsets
            yield images, labels, timestamps.astype(np.int64)



SOURCES = ("all", "train", "heldout")


def source_split(n: int, which: str) -> np.ndarray:
    """Positions of the source digits of a split: every fifth for ``"heldout"``, the rest for ``"train"``."""
    positions = np.arange(n)
    if which == "all":
        return positions
    heldout = positions % 5 == 0
    return positions[heldout] if which == "heldout" else positions[~heldout]


def _float(name: str, value: Any, minimum: float | None = None) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(out) or (minimum is not None and out < minimum):
        bound = "a finite number" if minimum is None else f"a finite number >= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return out


def _abrupt_shifts(shifts: Sequence[int], num_periods: int) -> tuple[int, ...]:
    if isinstance(shifts, (int, np.integer)) or shifts is None:
        raise ValueError(f"abrupt_shifts must be a list of periods in 1..{num_periods - 1}, got {shifts!r}")
    out = []
    for q in shifts:
        if isinstance(q, (bool, np.bool_)) or not isinstance(q, (int, np.integer)) or not 1 <= q < num_periods:
            raise ValueError(f"abrupt_shifts must hold periods in 1..{num_periods - 1} (a shift at period 0 "
                             f"has no before), got {q!r}")
        out.append(int(q))
    if len(set(out)) != len(out):
        raise ValueError(f"abrupt_shifts must not repeat a period, got {list(shifts)}")
    return tuple(sorted(out))


def _presence(new_classes: Mapping[int, Sequence[int]] | None, num_periods: int) -> np.ndarray:
    """(num_periods, NUM_CLASSES) bool: which classes exist in each period."""
    present = np.ones((num_periods, NUM_CLASSES), bool)
    if new_classes is None:
        return present
    if not isinstance(new_classes, Mapping):
        raise ValueError(f"new_classes must be a dict {{period: [classes]}}, got {type(new_classes).__name__}")
    seen: dict[int, int] = {}
    for period, classes in new_classes.items():
        if isinstance(period, (bool, np.bool_)) or not isinstance(period, (int, np.integer)) \
                or not 0 <= period < num_periods:
            raise ValueError(f"new_classes periods must be in 0..{num_periods - 1}, got {period!r}")
        if isinstance(classes, (int, np.integer)):
            classes = [classes]
        for c in classes:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= c < NUM_CLASSES:
                raise ValueError(f"new_classes classes must be digits 0..{NUM_CLASSES - 1}, got {c!r}")
            if int(c) in seen:
                raise ValueError(f"new_classes lists class {c} twice (periods {seen[int(c)]} and {period})")
            seen[int(c)] = int(period)
            present[:period, c] = False
    if not present[0].any():
        raise ValueError("new_classes must leave at least one class present in period 0")
    return present


def _priors(prior_drift: float, class_priors: Any, present: np.ndarray, num_periods: int) -> np.ndarray:
    if class_priors is None:
        z = np.linspace(-1.0, 1.0, NUM_CLASSES)
        logits = prior_drift * np.arange(num_periods)[:, None] * z[None, :]
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    else:
        if prior_drift != 0:
            raise ValueError("give either prior_drift or class_priors, not both")
        try:
            weights = np.array(class_priors, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"class_priors must be numbers of shape ({num_periods}, {NUM_CLASSES})") from None
        if weights.shape != (num_periods, NUM_CLASSES):
            raise ValueError(f"class_priors must have shape (num_periods, {NUM_CLASSES}) = "
                             f"({num_periods}, {NUM_CLASSES}), got {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("class_priors must be finite and non-negative")
    weights = weights * present
    total = weights.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        p = int(np.flatnonzero(total[:, 0] <= 0)[0])
        raise ValueError(f"class_priors give no weight to any class present in period {p} "
                         f"(present: {np.flatnonzero(present[p]).tolist()})")
    return weights / total


# ====================================================================== data and image operations
@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 bundled 8×8 digits as float32 in [0, 1] with their labels.

    The CSV that ships inside scikit-learn is read directly (importing ``sklearn.datasets`` takes seconds);
    ``load_digits`` is the fallback should the file move.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("rotating digits are built from scikit-learn's bundled digits: pip install scikit-learn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    if os.path.exists(path):
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        images, targets = table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    else:  # pragma: no cover - depends on scikit-learn's layout
        from sklearn.datasets import load_digits

        data = load_digits()
        images, targets = data.images.astype(np.float32), data.target.astype(np.int64)
    return images / 16.0, targets


def _render(sources: np.ndarray, angles: np.ndarray, size: int, chunk: int = 4096) -> np.ndarray:
    """Rotate (counter-clockwise, radians) and upsample (n, 8, 8) images to (n, size, size), bilinearly."""
    n, h, w = sources.shape
    stride = w + 3
    plane = (h + 3) * stride
    padded = np.zeros((n, h + 3, stride), np.float32)  # a zero border: samples outside the source read 0
    padded[:, 1 : h + 1, 1 : w + 1] = sources
    flat = padded.reshape(-1)
    scale = np.float32(w / (_FILL * size))  # source pixels per output pixel
    grid = (np.arange(size, dtype=np.float32) - np.float32((size - 1) / 2)) * scale
    dy, dx = (g.reshape(1, -1) for g in np.meshgrid(grid, grid, indexing="ij"))
    out = np.empty((n, size * size), np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        cos, sin = np.cos(angles[lo:hi])[:, None], np.sin(angles[lo:hi])[:, None]
        # output pixel -> source position (inverse rotation; rows grow downwards), clipped into the zero
        # border so that pixels far outside the source read only zeros
        sx = np.clip(cos * dx - sin * dy + np.float32((w - 1) / 2), -1, w)
        sy = np.clip(sin * dx + cos * dy + np.float32((h - 1) / 2), -1, h)
        x0, y0 = np.floor(sx), np.floor(sy)
        fx, fy = sx - x0, sy - y0
        # flat index of each sample's top-left neighbour in this chunk's padded images (exact in float32)
        first = np.float32(stride + 1) + np.arange(hi - lo, dtype=np.float32)[:, None] * np.float32(plane)
        i00 = (y0 * np.float32(stride) + x0 + first).astype(np.int64)
        part = flat[lo * plane : hi * plane]
        top = part[i00]
        top += fx * (part[i00 + 1] - top)
        i00 += stride
        bottom = part[i00]
        bottom += fx * (part[i00 + 1] - bottom)
        top += fy * (bottom - top)
        out[lo:hi] = top
    return out.reshape(n, size, size)


def _stroke(images: np.ndarray, amount: float) -> np.ndarray:
    """Thicken (amount > 0, grayscale dilation) or thin (< 0, erosion) strokes; fractions blend two steps."""
    if amount == 0:
        return images
    step = _dilate if amount > 0 else _erode
    whole, frac = divmod(abs(amount), 1.0)
    for _ in range(int(whole)):
        images = step(images)
    if frac:
        images = (1 - frac) * images + frac * step(images)
    return images


def _dilate(images: np.ndarray) -> np.ndarray:
    """Grayscale dilation with a plus-shaped structuring element (each pixel and its four neighbours)."""
    out = images.copy()
    np.maximum(out[:, 1:], images[:, :-1], out=out[:, 1:])
    np.maximum(out[:, :-1], images[:, 1:], out=out[:, :-1])
    np.maximum(out[:, :, 1:], images[:, :, :-1], out=out[:, :, 1:])
    np.maximum(out[:, :, :-1], images[:, :, 1:], out=out[:, :, :-1])
    return out


def _erode(images: np.ndarray) -> np.ndarray:
    """Grayscale erosion with the same element; outside the image counts as black."""
    out = images.copy()
    np.minimum(out[:, 1:], images[:, :-1], out=out[:, 1:])
    np.minimum(out[:, :-1], images[:, 1:], out=out[:, :-1])
    np.minimum(out[:, :, 1:], images[:, :, :-1], out=out[:, :, 1:])
    np.minimum(out[:, :, :-1], images[:, :, 1:], out=out[:, :, :-1])
    out[:, [0, -1], :] = 0
    out[:, :, [0, -1]] = 0
    return out
