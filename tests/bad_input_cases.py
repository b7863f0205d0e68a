"""The catalogue of bad inputs: one row per *kind* of bad input, over the four areas a user meets.

A row says what is wrong, builds that situation on fresh temporary directories and makes the one call, and names
the exception class expected and the culprit its message must name (the file, key, field, sample index, option...).
Store rows also ask that the stored data be intact afterwards: the store reopens (read-only and for writing),
``len()`` is unchanged, the earlier samples read back byte-exact and no file under ``<store>/shards/`` was added or
removed. ``tests/test_bad_input_table.py`` runs every row; ``python tests/test_bad_input_table.py --markdown``
prints the table for the docs.

Culprits are substrings or compiled regular expressions; ``{name}`` in a substring is replaced by what the row's
situation made (``ctx.vars``: the temporary store URL, shard file, directory...), so that the message must name
that very path.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

import lightning_modyn.store as store_errors
from lightning_modyn.store import (
    NO_LABEL,
    CatalogError,
    CompressedShardError,
    DeletedKeyError,
    DuplicateKeyError,
    ReadOnlyStoreError,
    RecordDtypeError,
    SampleEncodingError,
    SampleStore,
    ShardFormatError,
    ShardMissingError,
    ShardWriteError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreVersionError,
    TruncatedShardError,
    UnknownKeyError,
    UnsafeMemberError,
)

AREAS = {"store": "store", "ingest": "ingest (shard files)", "datamodule": "DataModule", "recipe": "recipe / CLI"}
REC_DTYPE = np.dtype([("x", "<i8"), ("y", "<f4"), ("label", "<i4")])
PLACEHOLDERS = {"store": "store URL", "shard": "shard file", "dir": "directory", "file": "file", "url": "S3 URL",
                "recipe": "recipe file", "offset": "offset", "key": "key"}


class CliError(Exception):
    """``lightning-modyn`` exited with a non-zero status; the message is what it printed on stderr."""


# ====================================================================== rows
@dataclass(frozen=True)
class Row:
    id: str
    area: str
    wrong: str
    call: Callable[["Ctx"], Any]
    error: type[BaseException] | tuple[type[BaseException], ...] | None
    culprit: tuple[str | re.Pattern, ...]
    intact: bool = False
    warning: type[Warning] | None = None
    after: Callable[["Ctx"], None] | None = None


ROWS: list[Row] = []


def row(area: str, wrong: str, error, culprit, *, id: str | None = None, intact: bool = False, warning=None,
        after=None):
    """Register the decorated function as the row's call (its name, dashed, is the row id)."""
    def register(call):
        ROWS.append(Row(id or call.__name__.removeprefix("_").replace("_", "-"), area, wrong, call, error,
                        culprit if isinstance(culprit, tuple) else (culprit,), intact, warning, after))
        return call
    return register


# ====================================================================== situations
def write_tar(path, members, fmt=tarfile.PAX_FORMAT, mode="w", encoding="utf-8") -> str:
    """Write ``members`` (name, bytes) with Python's tarfile (integral mtime, so short names get no PAX header)."""
    path = os.fspath(path)
    with tarfile.open(path, mode, format=fmt, encoding=encoding) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(n: int, prefix: str = "s", size: int = 700) -> list[tuple[str, bytes]]:
    """Members of ``n`` WebDataset samples with a 700-byte payload (two blocks) and a class."""
    out = []
    for i in range(n):
        out.append((f"{prefix}{i:03d}.bin", bytes([i % 256]) * size))
        out.append((f"{prefix}{i:03d}.cls", str(i % 3).encode()))
    return out


def member_offsets(path) -> list[tuple[str, int, int, int]]:
    """(name, header offset, data offset, size) of every member, as Python's tarfile sees them."""
    with tarfile.open(path, "r:") as tar:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tar.getmembers()]


def shard_listing(url: str) -> list[str]:
    return sorted(os.listdir(os.path.join(url, "shards")))


def shard_paths(url: str) -> list[str]:
    return [os.path.join(url, "shards", name) for name in shard_listing(url)]


def _read_samples(store: SampleStore, keys: np.ndarray) -> Any:
    return store.get(keys, meta=False)


def _read_records(store: SampleStore, keys: np.ndarray) -> Any:
    return store.get_records(keys).tobytes()


class Stored:
    """A store with known contents, and the check that they survived a refused call."""

    def __init__(self, url: str, store: SampleStore, keys: np.ndarray, read: Callable) -> None:
        self.url, self.store, self.keys, self.read = url, store, keys, read
        self.settle()

    def settle(self) -> "Stored":
        """Take the current state as the one to keep (after a row's own setup: a delete, an ingest)."""
        if self.store is not None:
            self.keys = self.keys[self.store.contains(self.keys)]
            self.expected = self.read(self.store, self.keys)
            self.n = len(self.store)
        self.files = shard_listing(self.url)
        return self

    def release(self) -> None:
        """Close the writer (for a row whose call opens the store itself, in this or another process)."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def check_intact(self) -> None:
        assert shard_listing(self.url) == self.files, "files under shards/ were added or removed"
        if self.store is not None:  # the writer that saw the refusal still reads what it had
            self.store.refresh()
            assert len(self.store) == self.n
            assert self.read(self.store, self.keys) == self.expected
            self.release()
        for readonly in (True, False):  # the store reopens, for reading and for writing
            with SampleStore.open(self.url, readonly=readonly) as again:
                assert len(again) == self.n
                assert self.read(again, self.keys) == self.expected
                assert set(self.keys.tolist()) <= set(again.all().keys.tolist())


class Ctx:
    """What a row's call builds its situation with: a fresh temporary directory and helpers."""

    def __init__(self, tmp: Path, request: Any = None) -> None:
        self.tmp = Path(tmp)
        self.request = request
        self.vars: dict[str, Any] = {}
        self.held: list[Stored] = []
        self._open: list[Any] = []

    # ------------------------------------------------------------------ stores
    def stored(self) -> Stored:
        """A store of four samples (``__key__`` kept0..kept3, timestamps 100..103, labels from ``cls``)."""
        for held in self.held:
            if held.read is _read_samples:
                return held
        return self._four_samples(str(self.tmp / "store"))

    def _four_samples(self, url: str, catalog: str | None = None) -> Stored:
        """A new store at ``url`` holding the four samples of :meth:`stored`, kept open for the row."""
        store = SampleStore.create(url, catalog=catalog)
        samples = [{"__key__": f"kept{i}", "bin": f"payload-{i}-".encode() * 40, "cls": i % 2} for i in range(4)]
        keys = store.append(samples, timestamps=[100, 101, 102, 103], labels="cls")
        self.vars["store"] = url
        held = Stored(url, store, keys, _read_samples)
        self.held.append(held)
        return held

    def records(self) -> Stored:
        """A store of ten records of ``REC_DTYPE`` in blocks of a few rows (``block_bytes=64``)."""
        for held in self.held:
            if held.read is _read_records:
                return held
        url = str(self.tmp / "rstore")
        store = SampleStore.create(url, block_bytes=64)
        rows = np.zeros(10, REC_DTYPE)
        rows["x"] = np.arange(10) * 1000
        rows["y"] = np.arange(10) / 4
        rows["label"] = np.arange(10) % 3
        keys = store.append_records(rows, timestamps=50, labels="label")
        self.vars["store"] = url
        held = Stored(url, store, keys, _read_records)
        self.held.append(held)
        return held

    def postgres(self) -> str:
        """The URL of the test PostgreSQL server (the ``postgres_url`` fixture: skipped where it cannot start)."""
        return self.request.getfixturevalue("postgres_url")

    def pg_stored(self) -> Stored:
        """A store of four samples, as :meth:`stored`, whose catalog is in PostgreSQL."""
        return self._four_samples(str(self.tmp / "pgstore"), catalog=self.postgres())

    def reader(self, url: str) -> SampleStore:
        store = SampleStore.open(url, readonly=True)
        self._open.append(store)
        return store

    def keep(self, obj: Any) -> Any:
        """Close ``obj`` when the row is done (a store or DataModule the call opened)."""
        self._open.append(obj)
        return obj

    def digits_store(self) -> str:
        """A small store of 8x8 digit images (two periods of 20) with the ``stream`` attribute a recipe checks."""
        from lightning_modyn.datasets.streams import RotatingDigitsStream

        url = str(self.tmp / "digits")
        if not os.path.exists(url):
            stream = RotatingDigitsStream(num_periods=2, samples_per_period=20, image_size=8)
            stream.write(url)
            with SampleStore.open(url) as store:
                store.set_attribute("stream", stream.describe())
        return url

    # ------------------------------------------------------------------ files
    def shard(self, name: str, members, **kwargs) -> str:
        folder = self.tmp / "incoming"
        folder.mkdir(exist_ok=True)
        path = write_tar(folder / name, members, **kwargs)
        self.vars["shard"] = path
        return path

    def path(self, name: str, content: bytes | None = None, key: str = "file") -> str:
        path = self.tmp / name
        if content is not None:
            path.write_bytes(content)
        self.vars[key] = str(path)
        return str(path)

    def folder(self, name: str, files: dict[str, bytes] | None = None) -> str:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        for fname, data in (files or {}).items():
            (path / fname).write_bytes(data)
        self.vars["dir"] = str(path)
        return str(path)

    # ------------------------------------------------------------------ recipes and the CLI
    def recipe(self, overrides: dict[str, Any] | None = None, dataset: dict | None = None) -> str:
        """A recipe over :meth:`digits_store` whose trigger never fires (nothing trains); ``overrides`` maps
        ``section.field`` (or ``section``) to a value, None removing it."""
        recipe = {
            "seed_everything": 0,
            "data": {"store": self.digits_store(), "batch_size": 8,
                     "decode": {"class_path": "lightning_modyn.data.ArrayMember",
                                "init_args": {"member": "raw", "shape": [8, 8, 1], "scale": 0.0039,
                                              "channels_first": True}}},
            "model": {"class_path": "lightning_modyn.models.DigitsConvNet", "init_args": {"channels": 4}},
            "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_checkpointing": False,
                        "enable_progress_bar": False, "enable_model_summary": False},
            "pipeline": {"trigger": {"class_path": "lightning_modyn.triggers.DataAmountTrigger",
                                     "init_args": {"num_samples": 100_000}},
                         "output_dir": str(self.tmp / "out"), "chunk_size": 100},
        }
        if dataset is not None:
            recipe["dataset"] = dataset
        for key, value in (overrides or {}).items():
            section, _, name = key.partition(".")
            target = recipe if not name else recipe.setdefault(section, {})
            field = name or section
            if value is None:
                target.pop(field, None)
            else:
                target[field] = value
        path = self.tmp / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        self.vars["recipe"] = str(path)
        return str(path)

    def run_recipe(self, overrides: dict[str, Any] | None = None, dataset: dict | None = None) -> Any:
        """``lightning-modyn run --config <recipe>`` through its Python function, in this process: the error it
        raises (the command prints that error as one ``error:`` line with exit code 2, tests/test_recipes.py)."""
        from lightning_modyn.recipe import run_recipe

        return run_recipe(["--config", self.recipe(overrides, dataset)])

    def cli(self, *argv: str) -> int:
        """``lightning-modyn <argv>`` in this process; a non-zero exit raises :class:`CliError` with its stderr."""
        from lightning_modyn.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code
        if code:
            raise CliError(f"exit status {code}: {message_of(SystemExit(code), err.getvalue())}")
        return code

    def cli_subprocess(self, *argv: str) -> None:
        """``python -m lightning_modyn.cli <argv>`` in a new process; a failure raises :class:`CliError` with the
        last line of its stderr (the error, after any traceback)."""
        done = subprocess.run([sys.executable, "-m", "lightning_modyn.cli", *argv], capture_output=True, text=True,
                              timeout=120, cwd=self.tmp)
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise CliError(f"exit status {done.returncode}: {lines[-1] if lines else ''}")

    def python(self, code: str, timeout: float = 60) -> Any:
        """Run ``code`` in a new Python process; it calls ``report(fn)``, which runs ``fn`` and prints what it raised
        (or returned). A store error is raised again here, of its own class; a signal ends in a RuntimeError."""
        prelude = (
            "import json, os, sys\n"
            "def report(fn):\n"
            "    try:\n"
            "        out = fn()\n"
            "    except Exception as err:\n"
            "        print(json.dumps({'error': type(err).__name__, 'message': str(err)}), flush=True)\n"
            "    else:\n"
            "        print(json.dumps({'error': None, 'message': repr(out)[:300]}), flush=True)\n"
        )
        done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp)
        if done.returncode:
            raise RuntimeError(f"the child process died (exit status {done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["error"] is None:
            return result["message"]
        cls = getattr(store_errors, result["error"], None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            cls = {"ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError, "OSError": OSError,
                   "IndexError": IndexError}.get(result["error"])
        if cls is None:
            raise RuntimeError(f"{result['error']}: {result['message']}")
        raise cls(result["message"])

    def s3(self) -> tuple[str, dict]:
        """A fresh bucket on the module's moto S3 server: (``s3://bucket/store``, storage options)."""
        import uuid

        import pytest

        s3fs = pytest.importorskip("s3fs")
        endpoint = self.request.getfixturevalue("s3_endpoint")
        options = {"key": "testing", "secret": "testing",
                   "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}}
        bucket = f"lm-{uuid.uuid4().hex[:12]}"
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir(bucket)
        fs.invalidate_cache()
        self.vars["url"] = f"s3://{bucket}/store"
        self.vars["s3fs"] = fs
        return self.vars["url"], options

    # ------------------------------------------------------------------ checks
    def culprits(self, row: Row) -> list[str | re.Pattern]:
        return [c.format(**{k: v for k, v in self.vars.items() if isinstance(v, (str, int))}) if isinstance(c, str)
                else c for c in row.culprit]

    def close(self) -> None:
        for obj in reversed(self._open):
            with contextlib.suppress(Exception):
                if hasattr(obj, "close"):
                    obj.close()
                elif hasattr(obj, "teardown"):
                    obj.teardown("fit")
        for held in self.held:
            with contextlib.suppress(Exception):
                held.release()


def message_of(err: BaseException, stderr: str = "") -> str:
    """What a user reads: the exception's text; for an argument parser's exit, the ``error:`` part of stderr (not
    its usage text, which lists every option)."""
    if isinstance(err, SystemExit):
        at = stderr.rfind("error:")
        return stderr[at:] if at >= 0 else stderr
    return str(err)


def culprit_found(culprit: str | re.Pattern, text: str) -> bool:
    return bool(culprit.search(text)) if isinstance(culprit, re.Pattern) else culprit in text


# ====================================================================== after-checks
def _unchanged_file(key: str):
    """An after-check: the file ``ctx.vars[key]`` still holds the bytes it held when the row recorded them."""
    def check(ctx: Ctx) -> None:
        path = ctx.vars[key]
        assert Path(path).read_bytes() == ctx.vars[f"{key}-bytes"], f"{path} was changed"
    return check


def _remember_bytes(ctx: Ctx, key: str) -> None:
    ctx.vars[f"{key}-bytes"] = Path(ctx.vars[key]).read_bytes()


def _not_created(ctx: Ctx) -> None:
    assert not os.path.exists(ctx.vars["store"]), "a refused create left files behind"


def _dir_unchanged(ctx: Ctx) -> None:
    assert sorted(os.listdir(ctx.vars["dir"])) == ctx.vars["dir-listing"], "files were added to the directory"


def _damaged_store_untouched(ctx: Ctx) -> None:
    """After refusing a damaged or newer store: no shard file was removed or added, and the catalog was not
    recreated or repaired behind the user's back (the damage is still there to be looked at)."""
    url = ctx.vars["store"]
    assert shard_listing(url) == ctx.vars["shards-before"], "shard files were added or removed"
    catalog = os.path.join(url, "catalog.sqlite")
    if ctx.vars.get("catalog-bytes") is None:
        assert not os.path.exists(catalog), "opening created an empty catalog in place of the missing one"
    else:
        assert Path(catalog).read_bytes() == ctx.vars["catalog-bytes"], "the damaged catalog was rewritten"


# ====================================================================== store: create and open
@row("store", "create on a URL that already holds a store", StoreExistsError, ("{store}", "already exists"),
     intact=True)
def _create_on_existing_store(ctx):
    SampleStore.create(ctx.stored().url)


@row("store", "create in a non-empty directory that is not a store", StoreExistsError, ("{dir}", "not empty"),
     after=_dir_unchanged)
def _create_in_non_empty_directory(ctx):
    path = ctx.folder("busy", {"keep.txt": b"keep me"})
    ctx.vars["dir-listing"] = ["keep.txt"]
    SampleStore.create(path)


@row("store", "create where a plain file is", StoreExistsError, "{file}", after=_unchanged_file("file"))
def _create_on_a_file(ctx):
    path = ctx.path("a-file", b"keep me")
    _remember_bytes(ctx, "file")
    SampleStore.create(path)


@row("store", "create with a size setting <= 0", ValueError, "shard_max_bytes", after=_not_created)
def _create_with_non_positive_size(ctx):
    ctx.vars["store"] = str(ctx.tmp / "never")
    SampleStore.create(ctx.vars["store"], shard_max_bytes=0)


@row("store", "create with a fractional size setting (silently rounded before)", ValueError,
     "shard_max_samples", after=_not_created)
def _create_with_fractional_size(ctx):
    ctx.vars["store"] = str(ctx.tmp / "never")
    SampleStore.create(ctx.vars["store"], shard_max_samples=1.5)


@row("store", "create with a record dtype that is not structured", RecordDtypeError, "structured",
     after=_not_created)
def _create_with_unstructured_record_dtype(ctx):
    ctx.vars["store"] = str(ctx.tmp / "never")
    SampleStore.create(ctx.vars["store"], record_dtype=np.float32)


@row("store", "create with a record dtype holding Python objects", RecordDtypeError, "object", after=_not_created)
def _create_with_object_record_dtype(ctx):
    ctx.vars["store"] = str(ctx.tmp / "never")
    SampleStore.create(ctx.vars["store"], record_dtype=[("a", "<i8"), ("o", object)])


def _s3_objects_kept(ctx: Ctx) -> None:
    fs, url = ctx.vars["s3fs"], ctx.vars["url"]
    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(url.removeprefix("s3://")))
    assert names == ["data.bin"], f"the refused create wrote {names}"


@row("store", "create on an S3 prefix that already holds objects", StoreExistsError, "{url}",
     after=_s3_objects_kept)
def _create_on_non_empty_s3_prefix(ctx):
    url, options = ctx.s3()
    ctx.vars["s3fs"].pipe(url.removeprefix("s3://") + "/data.bin", b"not yours")
    ctx.keep(SampleStore.create(url, storage_options=options))


@row("store", "open a path where nothing exists", StoreNotFoundError, "{store}", after=_not_created)
def _open_missing_path(ctx):
    ctx.vars["store"] = str(ctx.tmp / "no-such-store")
    SampleStore.open(ctx.vars["store"])


@row("store", "open a directory that is not a store", StoreNotFoundError, ("{dir}", "not a lightning-modyn store"),
     after=_dir_unchanged)
def _open_directory_that_is_not_a_store(ctx):
    path = ctx.folder("plain-dir", {"data.txt": b"mine"})
    ctx.vars["dir-listing"] = ["data.txt"]
    SampleStore.open(path)


@row("store", "open a directory whose store.json describes another format", StoreNotFoundError, "store.json")
def _open_foreign_store_json(ctx):
    path = ctx.folder("foreign", {"store.json": b'{"format": "something-else"}'})
    SampleStore.open(path)


@row("store", "open a store whose store.json is not JSON", StoreNotFoundError, "store.json")
def _open_store_json_not_json(ctx):
    path = ctx.folder("foreign", {"store.json": b"{not json"})
    SampleStore.open(path)


def _damage(ctx: Ctx, how: Callable[[str], None]) -> str:
    """Close the standard store, record its shards, damage it with ``how(url)``, record the catalog's bytes."""
    held = ctx.stored()
    held.release()
    url = held.url
    ctx.held.remove(held)
    ctx.vars["shards-before"] = shard_listing(url)
    how(url)
    catalog = os.path.join(url, "catalog.sqlite")
    ctx.vars["catalog-bytes"] = Path(catalog).read_bytes() if os.path.exists(catalog) else None
    return url


def _store_json_version(url: str, version: int) -> None:
    path = os.path.join(url, "store.json")
    marker = json.loads(Path(path).read_text())
    marker["version"] = version
    Path(path).write_text(json.dumps(marker))


@row("store", "store.json written by a newer format (version 99)", StoreVersionError, ("store.json", "99"),
     after=_damaged_store_untouched)
def _open_store_json_version_99(ctx):
    SampleStore.open(_damage(ctx, lambda url: _store_json_version(url, 99)))


def _catalog_format_version(url: str, version: int) -> None:
    conn = sqlite3.connect(os.path.join(url, "catalog.sqlite"))
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE name = 'format_version'", (str(version),))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@row("store", "catalog written by a newer format (meta format_version 99), writable open", StoreVersionError,
     ("catalog.sqlite", "99"), after=_damaged_store_untouched)
def _open_catalog_version_99(ctx):
    SampleStore.open(_damage(ctx, lambda url: _catalog_format_version(url, 99)))


@row("store", "catalog written by a newer format (meta format_version 99), read-only open", StoreVersionError,
     ("catalog.sqlite", "99"), after=_damaged_store_untouched)
def _open_readonly_catalog_version_99(ctx):
    ctx.keep(SampleStore.open(_damage(ctx, lambda url: _catalog_format_version(url, 99)), readonly=True))


def _remove_catalog(url: str) -> None:
    os.remove(os.path.join(url, "catalog.sqlite"))


@row("store", "catalog file deleted, writable open (must not create an empty one)", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_with_catalog_deleted(ctx):
    ctx.keep(SampleStore.open(_damage(ctx, _remove_catalog)))


@row("store", "catalog file deleted, read-only open", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_readonly_with_catalog_deleted(ctx):
    ctx.keep(SampleStore.open(_damage(ctx, _remove_catalog), readonly=True))


def _catalog_random_bytes(url: str) -> None:
    path = os.path.join(url, "catalog.sqlite")
    size = os.path.getsize(path)
    Path(path).write_bytes(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes())


def _catalog_truncated_to_half(url: str) -> None:
    path = os.path.join(url, "catalog.sqlite")
    os.truncate(path, os.path.getsize(path) // 2)


@row("store", "catalog overwritten with random bytes, writable open", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_catalog_random_bytes(ctx):
    ctx.keep(SampleStore.open(_damage(ctx, _catalog_random_bytes)))


@row("store", "catalog overwritten with random bytes, read-only open", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_readonly_catalog_random_bytes(ctx):
    store = ctx.keep(SampleStore.open(_damage(ctx, _catalog_random_bytes), readonly=True))
    len(store)  # a lazy open may only notice at the first read: that read must say it, too


@row("store", "catalog truncated to half its size, writable open", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_catalog_truncated(ctx):
    store = ctx.keep(SampleStore.open(_damage(ctx, _catalog_truncated_to_half)))
    len(store)


@row("store", "catalog truncated to half its size, read-only open", CatalogError, "catalog.sqlite",
     after=_damaged_store_untouched)
def _open_readonly_catalog_truncated(ctx):
    store = ctx.keep(SampleStore.open(_damage(ctx, _catalog_truncated_to_half), readonly=True))
    len(store)


@row("store", "a second writer while the first holds the store", StoreLockedError, ("{store}", "readonly=True"),
     intact=True)
def _second_writer(ctx):
    ctx.keep(SampleStore.open(ctx.stored().url))


@row("store", "another process holds a write transaction (BEGIN IMMEDIATE) on the catalog during append",
     StoreLockedError, "catalog.sqlite", intact=True)
def _catalog_write_locked_by_another_process(ctx):
    held = ctx.stored()
    catalog = os.path.join(held.url, "catalog.sqlite")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "conn.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep(12)\n", catalog],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        try:
            held.store.append([{"txt": "blocked"}])
        finally:
            waited = time.monotonic() - t0
        raise AssertionError(f"append went through after {waited:.1f} s (the holder's lock expired?)")
    except StoreLockedError:
        assert waited < 10, f"StoreLockedError came after {waited:.1f} s; expected within ~10 s"
        raise
    finally:
        holder.kill()
        holder.wait()


# ====================================================================== store: catalogs (PostgreSQL, remote writers)
@row("store", "create with a PostgreSQL catalog that cannot be reached", CatalogError,
     ("127.0.0.1:{port}/nowhere", "cannot reach PostgreSQL"), after=_not_created)
def _create_with_an_unreachable_catalog(ctx):
    ctx.vars["store"] = str(ctx.tmp / "s")
    from services import free_port

    ctx.vars["port"] = port = free_port()
    SampleStore.create(ctx.vars["store"], catalog=f"postgresql://postgres@127.0.0.1:{port}/nowhere")


@row("store", "create with a catalog URL that is not PostgreSQL", ValueError, ("mysql://db/x", "postgresql://"),
     after=_not_created)
def _create_with_a_catalog_url_of_another_database(ctx):
    ctx.vars["store"] = str(ctx.tmp / "s")
    SampleStore.create(ctx.vars["store"], catalog="mysql://db/x")


@row("store", "open with a PostgreSQL database that holds no catalog of the store (the catalog moved)",
     StoreNotFoundError, (re.compile(r"schema lm_[0-9a-f]+"), "did the catalog move", "catalog=<its current URL>"),
     intact=True)
def _open_with_a_database_without_the_catalog(ctx):
    import psycopg

    held = ctx.pg_stored()
    base = ctx.postgres()
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute("CREATE DATABASE moved")
    try:
        SampleStore.open(held.url, catalog=base.rsplit("/", 1)[0] + "/moved")
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute("DROP DATABASE moved")


@row("store", "a PostgreSQL catalog that belongs to another store", CatalogError,
     (re.compile(r"belongs to store '[0-9a-f]+', not to store '[0-9a-f]+'"), "cannot share a catalog"), intact=True)
def _open_with_the_catalog_of_another_store(ctx):
    held = ctx.pg_stored()
    with held.store.catalog.transaction():
        real = held.store.catalog.get_meta("store_id")
        held.store.catalog.set_meta("store_id", "0123456789abcdef")
    try:
        SampleStore.open(held.url, readonly=True)
    finally:
        with held.store.catalog.transaction():
            held.store.catalog.set_meta("store_id", real)


@row("store", "a PostgreSQL catalog of a newer format", StoreVersionError, ("format_version 7", "upgrade"),
     intact=True)
def _open_a_postgres_catalog_of_a_newer_format(ctx):
    held = ctx.pg_stored()
    with held.store.catalog.transaction():
        held.store.catalog.set_meta("format_version", 7)
    try:
        SampleStore.open(held.url, readonly=True)
    finally:
        with held.store.catalog.transaction():
            held.store.catalog.set_meta("format_version", 1)


@row("store", "catalog= given to open a store whose catalog is its SQLite file", CatalogError,
     ("{store}", "catalog.sqlite", "has no PostgreSQL catalog"), intact=True)
def _open_an_sqlite_store_with_a_catalog_url(ctx):
    SampleStore.open(ctx.stored().url, readonly=True, catalog=ctx.postgres())


@row("store", "store.json names a catalog of an unknown kind", StoreNotFoundError,
     ("{store}/store.json", "'mongodb'", "not a PostgreSQL catalog"))
def _store_json_naming_an_unknown_catalog(ctx):
    url = ctx.stored().url
    ctx.held[-1].release()
    marker = json.loads(Path(url, "store.json").read_text())
    marker.update(version=2, store_id="0123456789abcdef", catalog={"backend": "mongodb", "url": "mongodb://x"})
    Path(url, "store.json").write_text(json.dumps(marker))
    SampleStore.open(url)


@row("store", "the PostgreSQL connection drops before an append commits", CatalogError,
     ("127.0.0.1", "cannot reach PostgreSQL", "Nothing of the call that failed was committed"), intact=True)
def _connection_dropped_before_the_commit(ctx):
    import psycopg

    held = ctx.pg_stored()
    catalog = held.store.catalog
    real = catalog.transaction

    def cut_then_commit(*args, **kwargs):
        with psycopg.connect(ctx.postgres(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (catalog.conn.info.backend_pid,))
        return real(*args, **kwargs)

    catalog.transaction = cut_then_commit
    try:
        held.store.append([{"bin": b"lost"}])
    finally:
        held.release()


@row("store", "a second writer of a remote store with an SQLite catalog", StoreLockedError,
     ("memory://", "being written by", "lease"))
def _second_writer_of_a_remote_sqlite_store(ctx):
    import uuid

    url = f"memory://lm-bad-{uuid.uuid4().hex}/store"
    ctx.keep(SampleStore.create(url)).append([{"bin": b"one"}])
    SampleStore.open(url)


@row("store", "new_since with something that is not a cursor", TypeError, ("cursor must be None or", "5"))
def _new_since_with_a_bad_cursor(ctx):
    ctx.stored().store.new_since(5)


# ====================================================================== store: read-only stores
@row("store", "append on a store opened read-only", ReadOnlyStoreError, ("append", "{store}", "readonly=True"),
     intact=True)
def _append_on_readonly_store(ctx):
    ctx.reader(ctx.stored().url).append([{"txt": "x"}])


@row("store", "delete on a store opened read-only", ReadOnlyStoreError, ("delete", "{store}", "readonly=True"),
     intact=True)
def _delete_on_readonly_store(ctx):
    held = ctx.stored()
    ctx.reader(held.url).delete(held.keys[:1])


@row("store", "set_attribute on a store opened read-only", ReadOnlyStoreError,
     ("set_attribute", "{store}", "readonly=True"), intact=True)
def _set_attribute_on_readonly_store(ctx):
    ctx.reader(ctx.stored().url).set_attribute("a", 1)


# ====================================================================== store: append (samples)
@row("store", "append a value that cannot be stored as bytes (an object)", SampleEncodingError,
     ("sample 2", "field 'bad'", "object"), intact=True)
def _append_unencodable_value(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"txt": "ok"}, {"txt": "ok", "bad": object()}])


@row("store", "append a NaN number as a value", SampleEncodingError, ("sample 2", "field 'bad'", "nan"), intact=True)
def _append_nan_value(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"txt": "ok"}, {"txt": "ok", "bad": float("nan")}])


@row("store", "append a set (no byte form)", SampleEncodingError, ("sample 1", "field 'bad'", "set"), intact=True)
def _append_set_value(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"bad": {1, 2}}])


@row("store", "append a dict value that is not JSON (holds NaN)", SampleEncodingError,
     ("sample 1", "field 'bad'", "JSON"), intact=True)
def _append_json_with_nan(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"bad": {"a": float("nan")}}])


@row("store", "append a sample that is not a dict", SampleEncodingError, ("sample 1", "must be a dict"), intact=True)
def _append_sample_not_a_dict(ctx):
    ctx.stored().store.append([{"txt": "ok"}, b"raw bytes"])


@row("store", "append one sample dict instead of a list of samples", TypeError,
     re.compile(r"list of samples|one sample|\[sample\]"), intact=True)
def _append_one_dict_instead_of_a_list(ctx):
    ctx.stored().store.append({"txt": "one sample"})


@row("store", "append a sample with no data field (only __key__)", SampleEncodingError,
     ("sample 1", "no data fields"), intact=True)
def _append_sample_without_data(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"__key__": "only-meta"}])


@row("store", "append a field name with a '/'", SampleEncodingError, ("sample 1", "'a/b'"), intact=True)
def _append_field_with_slash(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"a/b": b"x"}])


@row("store", "append an empty field name", SampleEncodingError, ("sample 1", "''"), intact=True)
def _append_empty_field_name(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"": b"x"}])


@row("store", "append a __key__ that is not a string", SampleEncodingError, ("sample 2", "__key__", "5"),
     intact=True)
def _append_key_not_a_string(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"txt": "ok"}, {"__key__": 5, "txt": "x"}])


@row("store", "append a __key__ with a '.' (WebDataset would split it)", SampleEncodingError,
     ("sample 1", "name.with.dot"), intact=True)
def _append_key_with_dot(ctx):
    ctx.stored().store.append([{"txt": "ok"}, {"__key__": "name.with.dot", "txt": "x"}])


@row("store", "append a __key__ that climbs out of the root with '..'", UnsafeMemberError, ("sample 1", "../evil"),
     intact=True)
def _append_key_escaping_root(ctx):
    ctx.stored().store.append([{"txt": "fine"}, {"__key__": "../evil", "txt": "evil"}])


@row("store", "append an absolute __key__", UnsafeMemberError, ("sample 1", "/abs/evil"), intact=True)
def _append_absolute_key(ctx):
    ctx.stored().store.append([{"txt": "fine"}, {"__key__": "/abs/evil", "txt": "evil"}])


@row("store", "append a __key__ holding a lone surrogate (not encodable as UTF-8)", SampleEncodingError,
     ("sample 0", "__key__"), intact=True)
def _append_key_with_lone_surrogate(ctx):
    ctx.stored().store.append([{"__key__": "a\udc80b", "txt": "x"}])


@row("store", "append the same __key__ twice in one call", DuplicateKeyError, ("'dup'", "sample 0", "sample 1"),
     intact=True)
def _append_duplicate_key_in_call(ctx):
    ctx.stored().store.append([{"__key__": "dup", "txt": "a"}, {"__key__": "dup", "txt": "b"}])


@row("store", "append a __key__ the store already holds", DuplicateKeyError, ("'kept1'", "already in the store"),
     intact=True)
def _append_key_already_stored(ctx):
    ctx.stored().store.append([{"__key__": "fresh", "txt": "a"}, {"__key__": "kept1", "txt": "b"}])


def _append3(ctx: Ctx, **kwargs) -> None:
    ctx.stored().store.append([{"txt": f"t{i}", "cls": i} for i in range(3)], **kwargs)


@row("store", "append with timestamps of the wrong length", ValueError, "timestamps must have one value per sample (3)",
     intact=True)
def _append_timestamps_wrong_length(ctx):
    _append3(ctx, timestamps=[1, 2])


@row("store", "append with fractional timestamps", ValueError, "timestamps", intact=True)
def _append_timestamps_fractional(ctx):
    _append3(ctx, timestamps=[1.5, 2, 3])


@row("store", "append with a NaN timestamp", ValueError, "timestamps", intact=True)
def _append_timestamps_nan(ctx):
    _append3(ctx, timestamps=[float("nan"), 2, 3])


@row("store", "append with string timestamps", TypeError, "timestamps", intact=True)
def _append_timestamps_strings(ctx):
    _append3(ctx, timestamps=["a", "b", "c"])


@row("store", "append with boolean timestamps", TypeError, "timestamps", intact=True)
def _append_timestamps_bools(ctx):
    _append3(ctx, timestamps=[True, False, True])


@row("store", "append with a timestamp of 2**63 (beyond int64)", ValueError, "timestamps", intact=True)
def _append_timestamp_2_63(ctx):
    _append3(ctx, timestamps=[1, 2, 2**63])


@row("store", "append with a timestamp of 1e19 (a float beyond int64)", ValueError, "timestamps", intact=True)
def _append_timestamp_1e19(ctx):
    _append3(ctx, timestamps=[1.0, 2.0, 1e19])


@row("store", "append with a timestamp of -2**63 - 1 (below int64)", ValueError, "timestamps", intact=True)
def _append_timestamp_below_int64(ctx):
    _append3(ctx, timestamps=[1, 2, -2**63 - 1])


@row("store", "append with labels of the wrong length", ValueError, "labels must have one value per sample (3)",
     intact=True)
def _append_labels_wrong_length(ctx):
    _append3(ctx, labels=[1, 2])


@row("store", "append with fractional labels", ValueError, "labels must be whole numbers", intact=True)
def _append_labels_fractional(ctx):
    _append3(ctx, labels=[0.5, 1, 2])


@row("store", "append with string labels", TypeError, "labels must be integers", intact=True)
def _append_labels_strings(ctx):
    _append3(ctx, labels=["x", "y", "z"])


@row("store", "append with labels= naming a member no sample has", ValueError, "'nope'", intact=True)
def _append_labels_from_unknown_member(ctx):
    _append3(ctx, labels="nope")


@row("store", "append with labels= a member missing from one sample", ValueError, ("sample 1", "'cls'"),
     intact=True)
def _append_label_member_missing(ctx):
    ctx.stored().store.append([{"txt": "a", "cls": 0}, {"txt": "b"}], labels="cls")


@row("store", "append with labels= a member that is not a whole number", ValueError, ("sample 1", "'cls'"),
     intact=True)
def _append_label_member_not_whole(ctx):
    ctx.stored().store.append([{"txt": "a", "cls": 0}, {"txt": "b", "cls": 1.5}], labels="cls")


@row("store", "append with a label of 2**63 (beyond int64)", ValueError, "labels", intact=True)
def _append_label_2_63(ctx):
    _append3(ctx, labels=[0, 1, 2**63])


@row("store", "append with the label -2**63 (the store's no-label sentinel NO_LABEL)", ValueError, "labels",
     intact=True)
def _append_label_no_label_sentinel(ctx):
    _append3(ctx, labels=[0, 1, int(NO_LABEL)])


@row("store", "append beyond the file-size limit (RLIMIT_FSIZE; SIGXFSZ ignored)", ShardWriteError,
     re.compile(r"shard-\d+\.tar"), intact=True)
def _append_beyond_file_size_limit(ctx):
    held = ctx.stored()
    held.release()
    got = ctx.python(
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "from lightning_modyn.store import SampleStore\n"
        f"store = SampleStore.open({held.url!r})\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "report(lambda: store.append([{'bin': b'x' * 1_000_000}]))\n"
        "store.close()\n")
    raise AssertionError(f"the append went through: {got}")


def _small_store_kept_its_one_sample(ctx) -> None:
    store = SampleStore.open(ctx.vars["store"])
    try:
        assert len(store) == 1 and store.get([0], meta=False) == [{"bin": b"kept"}]
        assert os.listdir(os.path.join(ctx.vars["store"], "shards")) == ["shard-000000.tar"]
    finally:
        store.close()


@row("store", "append whose catalog rows grow past the file-size limit, its shards small enough (SQLite's bare "
     "'disk I/O error' before)", CatalogError, ("{store}", "catalog.sqlite", "file-size limit"),
     after=_small_store_kept_its_one_sample)
def _append_catalog_beyond_file_size_limit(ctx):
    ctx.vars["store"] = str(ctx.tmp / "small-shards")
    got = ctx.python(
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "from lightning_modyn.store import SampleStore\n"
        f"store = SampleStore.create({ctx.vars['store']!r}, shard_max_samples=10)\n"
        "store.append([{'bin': b'kept'}])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "report(lambda: store.append([{'bin': b'y', '__key__': 'k%05d' % i} for i in range(3000)]))\n"
        "store.close()\n")
    raise AssertionError(f"the append went through: {got}")


# ====================================================================== store: append_records
@row("store", "append_records with another dtype than the store's records", RecordDtypeError,
     (str(np.dtype([("x", "<i4"), ("y", "<f4"), ("label", "<i4")])), str(REC_DTYPE)), intact=True)
def _records_dtype_mismatch(ctx):
    ctx.records().store.append_records(np.zeros(3, [("x", "<i4"), ("y", "<f4"), ("label", "<i4")]))


@row("store", "append_records of a plain (unstructured) array", RecordDtypeError, "float64", intact=True)
def _records_not_structured(ctx):
    ctx.records().store.append_records(np.zeros(3))


@row("store", "append_records of a list of tuples", RecordDtypeError, "list", intact=True)
def _records_a_list(ctx):
    ctx.records().store.append_records([(1, 2.0, 3)])


@row("store", "append_records with an object field", RecordDtypeError, "object", intact=True)
def _records_object_field(ctx):
    ctx.records().store.append_records(np.zeros(2, [("x", "<i8"), ("o", object)]))


def _records3(ctx: Ctx, **kwargs) -> None:
    ctx.records().store.append_records(np.zeros(3, REC_DTYPE), **kwargs)


@row("store", "append_records with timestamps of the wrong length", ValueError,
     "timestamps must have one value per sample (3)", intact=True)
def _records_timestamps_wrong_length(ctx):
    _records3(ctx, timestamps=[1, 2])


@row("store", "append_records with a timestamp of 2**63", ValueError, "timestamps", intact=True)
def _records_timestamp_2_63(ctx):
    _records3(ctx, timestamps=[1, 2, 2**63])


@row("store", "append_records with a timestamp of 1e19", ValueError, "timestamps", intact=True)
def _records_timestamp_1e19(ctx):
    _records3(ctx, timestamps=[1.0, 2.0, 1e19])


@row("store", "append_records with a timestamp of -2**63 - 1", ValueError, "timestamps", intact=True)
def _records_timestamp_below_int64(ctx):
    _records3(ctx, timestamps=[1, 2, -2**63 - 1])


@row("store", "append_records with labels= a float field", ValueError, "'y'", intact=True)
def _records_labels_from_float_field(ctx):
    _records3(ctx, labels="y")


@row("store", "append_records with labels= a field the records lack", ValueError, "'missing'", intact=True)
def _records_labels_from_missing_field(ctx):
    _records3(ctx, labels="missing")


@row("store", "append_records with a label of 2**63", ValueError, "labels", intact=True)
def _records_label_2_63(ctx):
    _records3(ctx, labels=[0, 1, 2**63])


@row("store", "append_records with the label -2**63 (NO_LABEL)", ValueError, "labels", intact=True)
def _records_label_no_label_sentinel(ctx):
    _records3(ctx, labels=[0, 1, int(NO_LABEL)])


@row("store", "append_records whose uint64 label field holds a value >= 2**63 (labels='label')", ValueError,
     "'label'", intact=True)
def _records_uint64_label_beyond_int64(ctx):
    rows = np.zeros(3, [("x", "<i8"), ("label", "<u8")])
    rows["label"] = [0, 1, 2**63]
    ctx.stored().store.append_records(rows, labels="label")  # the first records of this store: fixes no dtype


# ====================================================================== store: reads and keys
@row("store", "get a key the store never assigned", UnknownKeyError, "unknown key 12345", intact=True)
def _get_unknown_key(ctx):
    held = ctx.stored()
    held.store.get([int(held.keys[0]), 12345])


@row("store", "get a negative key", UnknownKeyError, "unknown key -1", intact=True)
def _get_negative_key(ctx):
    ctx.stored().store.get([-1])


@row("store", "get the key 2**63 (beyond int64; must not wrap to -2**63)", UnknownKeyError,
     re.compile(r"(?<![-\d])9223372036854775808"),
     intact=True)
def _get_key_2_63(ctx):
    ctx.stored().store.get([2**63])


@row("store", "get a deleted key", DeletedKeyError, ("key {key}", "deleted"), intact=True)
def _get_deleted_key(ctx):
    held = ctx.stored()
    ctx.vars["key"] = victim = int(held.keys[1])
    held.store.delete([victim])
    held.settle()
    held.store.get([int(held.keys[0]), victim])


@row("store", "get with float keys", TypeError, "keys must be integers", intact=True)
def _get_float_keys(ctx):
    ctx.stored().store.get([0.0, 1.5])


@row("store", "get_member of an extension the samples lack", StoreError, "'nope'", intact=True)
def _get_member_missing_extension(ctx):
    held = ctx.stored()
    held.store.get_member(held.keys, "nope")


@row("store", "get_member of a record key", StoreError, "get_records()", intact=True)
def _get_member_of_a_record(ctx):
    held = ctx.records()
    held.store.get_member(held.keys[:2], "rows")


@row("store", "get_records on a store that holds no records", StoreError, "holds no records", intact=True)
def _get_records_without_records(ctx):
    held = ctx.stored()
    held.store.get_records(held.keys[:1])


@row("store", "get_records of a sample key", StoreError, ("key {key}", "get()"), intact=True)
def _get_records_of_a_sample(ctx):
    held = ctx.records()
    (sample,) = held.store.append([{"txt": "not a record"}])
    ctx.vars["key"] = int(sample)
    held.settle()
    held.store.get_records([int(held.keys[0]), int(sample)])


@row("store", "get_records of an unknown key", UnknownKeyError, "777", intact=True)
def _get_records_unknown_key(ctx):
    ctx.records().store.get_records([0, 777])


@row("store", "delete a key the store never assigned (nothing is deleted)", UnknownKeyError, "unknown key 12345",
     intact=True)
def _delete_unknown_key(ctx):
    held = ctx.stored()
    held.store.delete([int(held.keys[0]), 12345])


@row("store", "delete with boolean keys", TypeError, "keys must be integers", intact=True)
def _delete_bool_keys(ctx):
    ctx.stored().store.delete([True, False])


@row("store", "keys_after a value that is not an integer", ValueError, re.compile(r"\bkey\b"),
     intact=True)
def _keys_after_not_an_integer(ctx):
    ctx.stored().store.keys_after("x")


@row("store", "time_range with a bound that is not an integer", ValueError, "start", intact=True)
def _time_range_bound_not_an_integer(ctx):
    ctx.stored().store.time_range("a")


@row("store", "set_attribute with a value that is not JSON", TypeError, ("'a'", "JSON"), intact=True)
def _set_attribute_not_json(ctx):
    ctx.stored().store.set_attribute("a", object())


@row("store", "set_attribute with an empty name", ValueError, "''", intact=True)
def _set_attribute_empty_name(ctx):
    ctx.stored().store.set_attribute("", 1)


@row("store", "set_attribute with a NaN value (not JSON; written as NaN before)", TypeError,
     ("'ratio'",), intact=True)
def _set_attribute_nan(ctx):
    ctx.stored().store.set_attribute("ratio", float("nan"))


# ====================================================================== store: shards changed behind its back
@row("store", "a shard file removed by hand, then get", ShardMissingError, re.compile(r"shard-\d+\.tar"))
def _shard_removed_by_hand(ctx):
    held = ctx.stored()
    held.release()
    for path in shard_paths(held.url):
        os.remove(path)
    reader = ctx.reader(held.url)
    reader.get(held.keys)


@row("store", "a sample shard truncated on disk, then get", TruncatedShardError, re.compile(r"shard-\d+\.tar"))
def _sample_shard_truncated(ctx):
    held = ctx.stored()
    held.release()
    (path,) = shard_paths(held.url)
    os.truncate(path, os.path.getsize(path) // 2)
    ctx.reader(held.url).get(held.keys)


@row("store", "a records shard truncated on disk, then get_records past the cut (bare IndexError before)",
     TruncatedShardError, re.compile(r"shard-\d+\.tar"))
def _records_shard_truncated(ctx):
    held = ctx.records()
    held.release()
    (path,) = shard_paths(held.url)
    os.truncate(path, os.path.getsize(path) // 2)
    ctx.reader(held.url).get_records(held.keys[-1:])


@row("store", "a shard truncated while the reader has it mapped (read, truncate, read again)",
     TruncatedShardError, re.compile(r"shard-\d+\.tar"))
def _shard_truncated_while_mapped(ctx):
    url = str(ctx.tmp / "mapped")
    got = ctx.python(  # in a child: a read past the end of a shrunk map may end in SIGBUS
        "import glob\n"
        "import numpy as np\n"
        "from lightning_modyn.store import SampleStore\n"
        f"store = SampleStore.create({url!r})\n"
        "keys = store.append([{'bin': bytes([i]) * 5000} for i in range(8)])\n"
        "store.get(keys); store.get_member(keys, 'bin')\n"
        f"(shard,) = glob.glob({url!r} + '/shards/*.tar')\n"
        "os.truncate(shard, 2048)\n"
        "def again():\n"
        "    got = store.get(keys[-1:], meta=False)[0]['bin']\n"
        "    return 'zeros' if got == bytes(5000) else got[:8]\n"
        "report(again)\n")
    raise AssertionError(f"the second read returned {got} instead of raising")


@row("store", "an ingested shard overwritten with garbage of the same size, then get", ShardFormatError,
     "{shard}", intact=True)
def _ingested_shard_overwritten_with_garbage(ctx):
    held = ctx.stored()
    shard = ctx.shard("external.tar", sample_members(3, prefix="e"))
    keys = held.store.ingest([shard])
    held.settle()
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.write(np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8).tobytes())
    ctx.reader(held.url).get(keys)


@row("store", "compact() with deleted samples in an ingested shard not handed over: warns, leaves the file as is",
     None, "{shard}", warning=UserWarning, intact=True, after=_unchanged_file("shard"))
def _compact_keeps_a_shard_not_handed_over(ctx):
    held = ctx.stored()
    shard = ctx.shard("external.tar", sample_members(3, prefix="e"))
    _remember_bytes(ctx, "shard")
    keys = held.store.ingest([shard])
    held.store.delete(keys[:1])
    held.settle()
    held.store.compact()


# ====================================================================== ingest (shard files)
def _cut_shard(ctx: Ctx, cut: str) -> str:
    shard = ctx.shard("cut.tar", sample_members(3))
    _name, header, data, _size = member_offsets(shard)[2]  # s001.bin: 700 bytes
    boundary = data + tarfile.BLOCKSIZE * 2
    length = {"mid_member": data + 100, "member_boundary": boundary, "mid_header": boundary + 100}[cut]
    os.truncate(shard, length)
    ctx.vars["offset"] = {"mid_member": header, "member_boundary": boundary, "mid_header": boundary}[cut]
    return shard


def _ingest(ctx: Ctx, *shards: str, **kwargs) -> Any:
    return ctx.stored().store.ingest(list(shards), **kwargs)


@row("ingest", "a shard cut in the middle of a member", TruncatedShardError, ("{shard}", "offset {offset}"),
     intact=True)
def _shard_cut_mid_member(ctx):
    good = write_tar(ctx.tmp / "good.tar", sample_members(2, prefix="g"))
    _ingest(ctx, good, _cut_shard(ctx, "mid_member"))  # the good shard listed first is not indexed either


@row("ingest", "a shard cut at a member boundary (no end-of-archive marker)", TruncatedShardError,
     ("{shard}", "no end-of-archive marker"), intact=True)
def _shard_without_end_marker(ctx):
    _ingest(ctx, _cut_shard(ctx, "member_boundary"))


@row("ingest", "a shard cut inside a header", TruncatedShardError, ("{shard}", "truncated tar header"), intact=True)
def _shard_cut_mid_header(ctx):
    _ingest(ctx, _cut_shard(ctx, "mid_header"))


@row("ingest", "an empty file", TruncatedShardError, "{shard}", intact=True)
def _empty_shard_file(ctx):
    _ingest(ctx, ctx.path("empty.tar", b"", key="shard"))


@row("ingest", "a header whose checksum does not match", ShardFormatError, ("{shard}", "offset {offset}", "checksum"),
     intact=True)
def _shard_header_checksum(ctx):
    shard = ctx.shard("corrupt.tar", sample_members(3))
    _name, header, _data, _size = member_offsets(shard)[3]
    ctx.vars["offset"] = header
    with open(shard, "r+b") as f:
        f.seek(header + 129)  # a digit of the size field
        byte = f.read(1)[0]
        f.seek(header + 129)
        f.write(bytes([byte ^ 0x01]))
    _ingest(ctx, shard)


@row("ingest", "a file that is not a tar at all", ShardFormatError, ("{shard}", "offset 0"), intact=True)
def _file_not_a_tar(ctx):
    _ingest(ctx, ctx.path("notes.tar", b"hello, this is not a tar archive\n" * 40, key="shard"))


@row("ingest", "a shard path where no file is", ShardMissingError, "{shard}", intact=True)
def _missing_shard_file(ctx):
    ctx.vars["shard"] = str(ctx.tmp / "nowhere" / "shard.tar")
    _ingest(ctx, ctx.vars["shard"])


@row("ingest", "a directory given as a shard", ShardFormatError, "{dir}", intact=True)
def _directory_as_shard(ctx):
    folder = ctx.folder("shard-folder")
    write_tar(Path(folder) / "inside.tar", sample_members(1))
    _ingest(ctx, folder)


@row("ingest", "one path string instead of a list of paths", TypeError, "{shard}", intact=True)
def _one_path_instead_of_a_list(ctx):
    ctx.stored().store.ingest(ctx.shard("single.tar", sample_members(1)))


@row("ingest", "a gzip-compressed shard", CompressedShardError, ("{shard}", "gzip", "uncompressed"), intact=True)
def _gzip_shard(ctx):
    _ingest(ctx, ctx.shard("shard.tar.gz", sample_members(2), mode="w:gz"))


@row("ingest", "a gzip-compressed shard named .tar (found by content)", CompressedShardError, ("{shard}", "gzip"),
     intact=True)
def _gzip_shard_disguised(ctx):
    _ingest(ctx, ctx.shard("disguised.tar", sample_members(2), mode="w:gz"))


@row("ingest", "a bzip2-compressed shard", CompressedShardError, ("{shard}", "bzip2"), intact=True)
def _bzip2_shard(ctx):
    _ingest(ctx, ctx.shard("shard.tar.bz2", sample_members(2), mode="w:bz2"))


@row("ingest", "an xz-compressed shard", CompressedShardError, ("{shard}", "xz"), intact=True)
def _xz_shard(ctx):
    _ingest(ctx, ctx.shard("shard.tar.xz", sample_members(2), mode="w:xz"))


@row("ingest", "a zstd-compressed shard (magic number)", CompressedShardError, ("{shard}", "zstd"), intact=True)
def _zstd_shard(ctx):
    _ingest(ctx, ctx.path("shard.tar.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 2000, key="shard"))


@row("ingest", "a member name climbing out of the root with '..'", UnsafeMemberError, ("{shard}", "'../x.txt'"),
     intact=True)
def _member_name_with_dotdot(ctx):
    _ingest(ctx, ctx.shard("unsafe.tar", sample_members(2) + [("../x.txt", b"evil")]))


@row("ingest", "an absolute member name", UnsafeMemberError, ("{shard}", "'/abs/x.txt'"), intact=True)
def _absolute_member_name(ctx):
    _ingest(ctx, ctx.shard("unsafe.tar", sample_members(1) + [("/abs/x.txt", b"evil")]))


@row("ingest", "a GNU long member name (././@LongLink) climbing out of the root", UnsafeMemberError,
     ("{shard}", "'../" + "d" * 120 + "/x.txt'"), intact=True)
def _gnu_long_name_escaping(ctx):
    members = sample_members(1) + [("../" + "d" * 120 + "/x.txt", b"evil")]
    _ingest(ctx, ctx.shard("unsafe.tar", members, fmt=tarfile.GNU_FORMAT))


@row("ingest", "a member name that is not UTF-8 (raw bytes ff fe)", ShardFormatError, ("{shard}", "offset {offset}"),
     intact=True)
def _member_name_not_utf8(ctx):
    members = sample_members(1) + [("\xff\xfe.bin", b"raw")]
    shard = ctx.shard("latin.tar", members, fmt=tarfile.USTAR_FORMAT, encoding="latin-1")
    ctx.vars["offset"] = member_offsets(shard)[2][1]  # the header of b"\xff\xfe.bin"
    _ingest(ctx, shard)


@row("ingest", "a sample key that occurs twice in one shard", DuplicateKeyError, ("{shard}", "'s000'"), intact=True)
def _duplicate_key_in_shard(ctx):
    _ingest(ctx, ctx.shard("dup.tar", [("s000.bin", b"a"), ("s001.bin", b"b"), ("s000.cls", b"1")]))


@row("ingest", "a sample key the store already holds", DuplicateKeyError, ("{shard}", "'kept0'"), intact=True)
def _duplicate_key_with_store(ctx):
    _ingest(ctx, ctx.shard("clash.tar", [("fresh.bin", b"a"), ("kept0.bin", b"b")]))


@row("ingest", "a shard that is already part of the store", ShardFormatError, ("{shard}", "already part"),
     intact=True)
def _shard_ingested_twice(ctx):
    shard = ctx.shard("once.tar", sample_members(2))
    _ingest(ctx, shard)
    ctx.stored().settle()
    _ingest(ctx, shard)


@row("ingest", "the same shard listed twice in one call", ShardFormatError, ("{shard}", "twice"), intact=True)
def _shard_listed_twice(ctx):
    shard = ctx.shard("twice.tar", sample_members(2))
    _ingest(ctx, shard, shard)


def _meta_shard(ctx: Ctx) -> str:
    members = [("a.cls", b"1"), ("a.ts", b"100"), ("b.cls", b"x"), ("b.ts", b"200"), ("c.cls", b"2")]
    return ctx.shard("meta.tar", members)


@row("ingest", "labels= a member that is not an integer in one sample", ValueError, ("{shard}", "'b'", "b'x'"),
     intact=True)
def _ingest_label_member_not_integer(ctx):
    _ingest(ctx, _meta_shard(ctx), labels="cls")


@row("ingest", "timestamps= a member one sample lacks", ValueError, ("{shard}", "'c'", "'ts'"), intact=True)
def _ingest_timestamp_member_missing(ctx):
    _ingest(ctx, _meta_shard(ctx), timestamps="ts")


@row("ingest", "timestamps of the wrong length", ValueError, "one value per sample (3)", intact=True)
def _ingest_timestamps_wrong_length(ctx):
    _ingest(ctx, _meta_shard(ctx), timestamps=[1, 2])


@row("ingest", "lightning-modyn ingest into a missing store without --create", CliError, ("no store at", "{store}"))
def _cli_ingest_without_create(ctx):
    ctx.vars["store"] = str(ctx.tmp / "nope")
    ctx.cli("ingest", ctx.shard("a.tar", sample_members(2)), "--store", ctx.vars["store"], "--quiet")


@row("ingest", "lightning-modyn ingest of a truncated shard", CliError, ("cut.tar", "truncated"))
def _cli_ingest_truncated_shard(ctx):
    ctx.cli("ingest", _cut_shard(ctx, "mid_member"), "--store", str(ctx.tmp / "s"), "--create", "--quiet")


@row("ingest", "lightning-modyn ingest --store under a plain file (traceback before)", CliError, "{file}/s")
def _cli_ingest_store_under_a_file(ctx):
    path = ctx.path("a-file", b"x")
    ctx.cli("ingest", ctx.shard("a.tar", sample_members(1)), "--store", f"{path}/s", "--create", "--quiet")


@row("ingest", "lightning-modyn ingest of a directory", CliError, "{dir}")
def _cli_ingest_directory(ctx):
    folder = ctx.folder("shard-folder")
    ctx.cli("ingest", folder, "--store", str(ctx.tmp / "s"), "--create", "--quiet")


# ====================================================================== DataModule
def _dm(ctx: Ctx, store: Any = None, **kwargs) -> Any:
    from lightning_modyn.data import ArrayMember, ModynDataModule

    kwargs.setdefault("decode", ArrayMember("bin", [400]))  # "payload-i-" * 40
    return ctx.keep(ModynDataModule(ctx.stored().store if store is None else store, **kwargs))


def _first_batch(dm: Any) -> Any:
    loader = dm.train_dataloader()
    return next(iter(loader))


def _dm_trained(ctx: Ctx, **kwargs) -> Any:
    dm = _dm(ctx, **kwargs)
    dm.set_training_set(ctx.stored().keys)
    return _first_batch(dm)


@row("datamodule", "batch_size 0", ValueError, "batch_size must be an integer >= 1, got 0")
def _dm_batch_size_zero(ctx):
    _dm(ctx, batch_size=0)


@row("datamodule", "batch_size a float (cryptic 'float cannot be interpreted as an integer' at the first batch "
     "before)", ValueError, "batch_size")
def _dm_batch_size_float(ctx):
    _dm_trained(ctx, batch_size=2.5)


@row("datamodule", "batch_size a string", ValueError, "batch_size")
def _dm_batch_size_string(ctx):
    _dm(ctx, batch_size="32")


@row("datamodule", "val_batch_size a float (accepted silently before)", ValueError, "val_batch_size")
def _dm_val_batch_size_float(ctx):
    _dm(ctx, val_batch_size=2.5)


@row("datamodule", "num_workers negative", ValueError, "num_workers")
def _dm_num_workers_negative(ctx):
    _dm(ctx, num_workers=-1)


@row("datamodule", "num_workers a float", ValueError, "num_workers")
def _dm_num_workers_float(ctx):
    _dm(ctx, num_workers=1.5)


@row("datamodule", "seed negative (numpy's 'expected non-negative integer' at the first batch before)", ValueError,
     "seed")
def _dm_seed_negative(ctx):
    _dm_trained(ctx, seed=-1)


@row("datamodule", "seed a string", ValueError, "seed")
def _dm_seed_string(ctx):
    _dm(ctx, seed="a")


@row("datamodule", "locality_window 0", ValueError, "locality_window")
def _dm_locality_window_zero(ctx):
    _dm(ctx, locality_window=0)


@row("datamodule", "prefetch_factor negative (torch's error at the first loader before)", ValueError,
     "prefetch_factor")
def _dm_prefetch_factor_negative(ctx):
    _dm(ctx, prefetch_factor=-1, num_workers=1)


@row("datamodule", "decode not callable (a string)", TypeError, "decode")
def _dm_decode_not_callable(ctx):
    _dm_trained(ctx, decode="bin")


@row("datamodule", "decode the decoder class instead of an instance", TypeError, ("decode", "ArrayMember"))
def _dm_decode_a_class(ctx):
    from lightning_modyn.data import ArrayMember

    _dm_trained(ctx, decode=ArrayMember)


@row("datamodule", "decode returns something other than a tuple", TypeError, ("decode", "int"))
def _dm_decode_returns_not_a_tuple(ctx):
    _dm_trained(ctx, decode=lambda batch: 5)


@row("datamodule", "store None", TypeError, "store")
def _dm_store_none(ctx):
    from lightning_modyn.data import ModynDataModule

    ModynDataModule(None)


@row("datamodule", "store an empty string ('no store at ' naming nothing before)", ValueError, "store")
def _dm_store_empty_string(ctx):
    from lightning_modyn.data import ModynDataModule

    ModynDataModule("")


@row("datamodule", "store a URL where no store is (found at the first use)", StoreNotFoundError, "{store}")
def _dm_store_missing(ctx):
    from lightning_modyn.data import ModynDataModule

    ctx.vars["store"] = str(ctx.tmp / "nowhere")
    ModynDataModule(ctx.vars["store"]).set_training_set([0])


@row("datamodule", "storage_options not a dict", TypeError, "storage_options")
def _dm_storage_options_not_a_dict(ctx):
    from lightning_modyn.data import ModynDataModule

    ModynDataModule(str(ctx.tmp / "s"), storage_options="anon=true")


@row("datamodule", "a store of samples and no decode", ValueError, ("{store}", "decode"))
def _dm_samples_without_decode(ctx):
    _dm_trained(ctx, decode=None)


@row("datamodule", "set_training_set with no keys", ValueError, "training set is empty")
def _dm_empty_training_set(ctx):
    _dm(ctx).set_training_set([])


@row("datamodule", "set_training_set with a key the store never assigned", UnknownKeyError, "unknown key 99")
def _dm_unknown_training_key(ctx):
    _dm(ctx).set_training_set([0, 99])


@row("datamodule", "set_training_set with a deleted key", DeletedKeyError, "key {key}")
def _dm_deleted_training_key(ctx):
    held = ctx.stored()
    ctx.vars["key"] = int(held.keys[0])
    held.store.delete(held.keys[:1])
    _dm(ctx).set_training_set(held.keys)


@row("datamodule", "set_training_set with float keys", TypeError, "training keys must be integers")
def _dm_float_training_keys(ctx):
    _dm(ctx).set_training_set([0.5])


@row("datamodule", "set_training_set with ragged nested keys (numpy's 'inhomogeneous shape' before)", TypeError,
     "training keys")
def _dm_ragged_training_keys(ctx):
    _dm(ctx).set_training_set([[0, 1], [2]])


@row("datamodule", "set_training_set with the key 2**63 (reported as -9223372036854775808 before)", UnknownKeyError,
     re.compile(r"(?<![-\d])9223372036854775808"))
def _dm_training_key_2_63(ctx):
    _dm(ctx).set_training_set(np.array([2**63], np.uint64))


@row("datamodule", "training weights of the wrong length", ValueError, "one value per key (2)")
def _dm_weights_wrong_length(ctx):
    _dm(ctx).set_training_set([0, 1], [1.0])


@row("datamodule", "a NaN training weight", ValueError, ("key 1", "nan"))
def _dm_weight_nan(ctx):
    _dm(ctx).set_training_set([0, 1], [1.0, float("nan")])


@row("datamodule", "a negative training weight", ValueError, ("key 1", "negative"))
def _dm_weight_negative(ctx):
    _dm(ctx).set_training_set([0, 1], [1.0, -1.0])


@row("datamodule", "training weights that are strings ('could not convert string to float' before)", TypeError,
     "training weights")
def _dm_weights_strings(ctx):
    _dm(ctx).set_training_set([0, 1], ["a", "b"])


@row("datamodule", "a training weight beyond float32 (became inf silently before)", ValueError, ("key 1", "float32"))
def _dm_weight_beyond_float32(ctx):
    _dm(ctx).set_training_set([0, 1], [1.0, 1e39])


@row("datamodule", "every training weight 0 (trained on nothing, silently, before)", ValueError,
     "every training weight is 0")
def _dm_weights_all_zero(ctx):
    _dm(ctx).set_training_set([0, 1], [0.0, 0.0])


@row("datamodule", "set_validation_set with both keys and a time window", ValueError, "not both")
def _dm_validation_keys_and_window(ctx):
    _dm(ctx).set_validation_set([0], start=0)


@row("datamodule", "set_validation_set with a fractional window bound (truncated silently before)", ValueError,
     "start")
def _dm_validation_fractional_bound(ctx):
    _dm(ctx).set_validation_set(start=100.5)


@row("datamodule", "set_validation_set with a window that holds no sample", ValueError, "validation set is empty")
def _dm_validation_empty_window(ctx):
    _dm(ctx).set_validation_set(start=500, end=600)


@row("datamodule", "set_training_subset before set_training_set", RuntimeError, "set_training_set")
def _dm_subset_before_training_set(ctx):
    _dm(ctx).set_training_subset([0])


@row("datamodule", "train_dataloader before set_training_set", RuntimeError, "set_training_set")
def _dm_loader_before_training_set(ctx):
    _dm(ctx).train_dataloader()


@row("datamodule", "test_dataloader without a test set", RuntimeError, "set_test_set")
def _dm_test_loader_without_test_set(ctx):
    _dm(ctx).test_dataloader()


@row("datamodule", "batches() with a negative batch_size (yielded nothing before)", ValueError, "batch_size")
def _dm_batches_negative_size(ctx):
    list(_dm(ctx).batches([0, 1], batch_size=-1))


@row("datamodule", "batches() with float keys (truncated to other keys silently before)", TypeError,
     "keys must be integers")
def _dm_batches_float_keys(ctx):
    list(_dm(ctx).batches([1.5]))


@row("datamodule", "ArrayMember with a non-positive shape", ValueError, ("shape", "-4"))
def _decoder_shape_negative(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("raw", [-4, -4])


@row("datamodule", "ArrayMember with a shape string ('44' read as (4, 4) silently before)", ValueError,
     ("shape", "'44'"))
def _decoder_shape_string(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("raw", "44")


@row("datamodule", "ArrayMember with an unknown dtype", TypeError, ("dtype", "nonsense"))
def _decoder_dtype_unknown(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("raw", [16], dtype="nonsense")


@row("datamodule", "ArrayMember with an object dtype", TypeError, "dtype")
def _decoder_dtype_object(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("raw", [16], dtype="O")


@row("datamodule", "ArrayMember with an empty member name", TypeError, "member")
def _decoder_member_empty(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("", [16])


@row("datamodule", "ArrayMember with a string scale (a torch error at the first batch before)", TypeError, "scale")
def _decoder_scale_string(ctx):
    from lightning_modyn.data import ArrayMember

    ArrayMember("raw", [16], scale="1/255")


@row("datamodule", "ArrayMember of a member the samples lack (first batch)", StoreError, "'nope'")
def _decoder_member_missing(ctx):
    from lightning_modyn.data import ArrayMember

    _dm_trained(ctx, decode=ArrayMember("nope", [16]))


@row("datamodule", "ArrayMember whose shape does not match the member's bytes (first batch)", RuntimeError,
     ("'bin'", "400 bytes", "expected 401"))
def _decoder_wrong_size(ctx):
    from lightning_modyn.data import ArrayMember

    dm = _dm(ctx, decode=ArrayMember("bin", [401]))
    held = ctx.stored()
    dm.set_training_set(held.keys)
    _first_batch(dm)


@row("datamodule", "ArrayMember on samples stored without a label (first batch)", RuntimeError,
     ("sample {key}", "no label"))
def _decoder_unlabeled_sample(ctx):
    from lightning_modyn.data import ArrayMember

    held = ctx.stored()
    (key,) = held.store.append([{"bin": bytes(400)}])
    ctx.vars["key"] = int(key)
    dm = _dm(ctx, decode=ArrayMember("bin", [400]), shuffle=False)
    dm.set_training_set([key])
    _first_batch(dm)


@row("datamodule", "RecordsToTensors with a label_field the records lack (first batch)", RuntimeError, "'nope'")
def _decoder_records_label_field_missing(ctx):
    from lightning_modyn.data import RecordsToTensors

    held = ctx.records()
    dm = _dm(ctx, store=held.store, decode=RecordsToTensors("nope"))
    dm.set_training_set(held.keys)
    _first_batch(dm)


@row("datamodule", "RecordsToTensors with an unknown label_dtype (torch's AttributeError at the first batch "
     "before)", ValueError, ("label_dtype", "nonsense"))
def _decoder_records_label_dtype_unknown(ctx):
    from lightning_modyn.data import RecordsToTensors

    RecordsToTensors(label_dtype="nonsense")


@row("datamodule", "RecordsToTensors on a store of samples (first batch)", RuntimeError, "records")
def _decoder_records_on_samples(ctx):
    from lightning_modyn.data import RecordsToTensors

    _dm_trained(ctx, decode=RecordsToTensors())


# ====================================================================== recipes and the CLI
@row("recipe", "unknown class_path (trigger)", SystemExit, "NoSuchTrigger")
def _recipe_unknown_trigger(ctx):
    ctx.run_recipe({"pipeline.trigger": {"class_path": "lightning_modyn.triggers.NoSuchTrigger"}})


@row("recipe", "unknown class_path (model)", SystemExit, "NoSuchModel")
def _recipe_unknown_model(ctx):
    ctx.run_recipe({"model": {"class_path": "lightning_modyn.models.NoSuchModel"}})


@row("recipe", "unknown class_path (decode)", SystemExit, "NoDecoder")
def _recipe_unknown_decoder(ctx):
    ctx.run_recipe({"data.decode": {"class_path": "lightning_modyn.data.NoDecoder"}})


@row("recipe", "unknown class_path (dataset)", SystemExit, "NoStream")
def _recipe_unknown_dataset(ctx):
    ctx.run_recipe(dataset={"class_path": "lightning_modyn.datasets.streams.NoStream"})


@row("recipe", "a misspelt option in a section (pipeline.chunksize)", SystemExit, "chunksize")
def _recipe_misspelt_option(ctx):
    ctx.run_recipe({"pipeline.chunksize": 5})


@row("recipe", "a misspelt section (trainr)", SystemExit, "trainr")
def _recipe_misspelt_section(ctx):
    ctx.run_recipe({"trainr": {"max_epochs": 3}})


@row("recipe", "no pipeline.trigger", SystemExit, "trigger")
def _recipe_without_trigger(ctx):
    ctx.run_recipe({"pipeline.trigger": None})


@row("recipe", "--config of a file that does not exist", SystemExit, "{recipe}")
def _recipe_file_missing(ctx):
    from lightning_modyn.cli import main

    ctx.vars["recipe"] = str(ctx.tmp / "nope.yaml")
    main(["run", "--config", ctx.vars["recipe"]])


@row("recipe", "--config of a file that is not valid YAML (the file was not named before)", SystemExit,
     ("{recipe}", "line 1"))
def _recipe_not_yaml(ctx):
    from lightning_modyn.cli import main

    main(["run", "--config", ctx.path("bad.yaml", b"data: [unclosed\n  x: y\n", key="recipe")])


@row("recipe", "data.batch_size negative", ValueError, "batch_size must be an integer >= 1, got -5")
def _recipe_batch_size_negative(ctx):
    ctx.run_recipe({"data.batch_size": -5})


@row("recipe", "data.batch_size not a number", SystemExit, "data.batch_size")
def _recipe_batch_size_string(ctx):
    ctx.run_recipe({"data.batch_size": "many"})


@row("recipe", "data.seed negative (numpy's error inside the first fit before)", ValueError, "seed")
def _recipe_data_seed_negative(ctx):
    ctx.run_recipe({"data.seed": -1})


@row("recipe", "data.prefetch_factor negative (torch's error inside the first fit before)", ValueError,
     "prefetch_factor")
def _recipe_prefetch_factor_negative(ctx):
    ctx.run_recipe({"data.prefetch_factor": -1, "data.num_workers": 1})


@row("recipe", "data.store an empty string", ValueError, "store")
def _recipe_store_empty(ctx):
    ctx.run_recipe({"data.store": ""})


@row("recipe", "data.store missing and no dataset section", StoreNotFoundError, ("{store}", "dataset section"))
def _recipe_store_missing(ctx):
    ctx.vars["store"] = str(ctx.tmp / "no-store")
    ctx.run_recipe({"data.store": ctx.vars["store"]})


@row("recipe", "data.store a directory that is not a store, no dataset section ('no store at' before)",
     StoreNotFoundError, ("{dir}", "not a lightning-modyn store"))
def _recipe_store_not_a_store(ctx):
    ctx.run_recipe({"data.store": ctx.folder("plain", {"notes.txt": b"mine"})})


@row("recipe", "data.store a non-empty directory and a dataset section to write", StoreExistsError,
     ("{dir}", "not empty"))
def _recipe_dataset_into_non_empty_dir(ctx):
    folder = ctx.folder("plain", {"notes.txt": b"mine"})
    ctx.run_recipe({"data.store": folder}, dataset={
        "class_path": "lightning_modyn.datasets.streams.RotatingDigitsStream",
        "init_args": {"num_periods": 2, "samples_per_period": 20, "image_size": 8}})


@row("recipe", "data.store written by another dataset than the recipe's", ValueError,
     ("another dataset", "samples_per_period"))
def _recipe_store_of_another_dataset(ctx):
    ctx.run_recipe(dataset={"class_path": "lightning_modyn.datasets.streams.RotatingDigitsStream",
                            "init_args": {"num_periods": 2, "samples_per_period": 30, "image_size": 8}})


@row("recipe", "dataset with a negative size", ValueError, "num_periods")
def _recipe_dataset_negative_size(ctx):
    ctx.run_recipe({"data.store": str(ctx.tmp / "new-store")}, dataset={
        "class_path": "lightning_modyn.datasets.streams.RotatingDigitsStream", "init_args": {"num_periods": -1}})


@row("recipe", "data.decode a lambda (source code)", SystemExit, "decode")
def _recipe_decode_lambda(ctx):
    ctx.run_recipe({"data.decode": "lambda batch: batch"})


@row("recipe", "data.decode an import path of a function that runs programs", ValueError, ("decode", "refused"))
def _recipe_decode_os_system(ctx):
    ctx.run_recipe({"data.decode": "os.system"})


@row("recipe", "ArrayMember shape negative", ValueError, "shape")
def _recipe_decoder_shape_negative(ctx):
    ctx.run_recipe({"data.decode": {"class_path": "lightning_modyn.data.ArrayMember",
                                    "init_args": {"member": "raw", "shape": [-8, 8, 1]}}})


@row("recipe", "pipeline.seed -1 (Lightning's '-1 is not in bounds' inside the first fit before)", ValueError,
     "pipeline.seed")
def _recipe_pipeline_seed_negative(ctx):
    ctx.run_recipe({"pipeline.seed": -1})


@row("recipe", "pipeline.seed beyond 2**32 - 1", ValueError, "pipeline.seed")
def _recipe_pipeline_seed_too_big(ctx):
    ctx.run_recipe({"pipeline.seed": 2**40})


@row("recipe", "seed_everything -1 (Lightning's message named only the value before)", ValueError,
     "seed_everything")
def _recipe_seed_everything_negative(ctx):
    ctx.run_recipe({"seed_everything": -1})


@row("recipe", "pipeline.chunk_size 0", ValueError, "chunk_size")
def _recipe_chunk_size_zero(ctx):
    ctx.run_recipe({"pipeline.chunk_size": 0})


@row("recipe", "pipeline.chunk_size fractional", SystemExit, "pipeline.chunk_size")
def _recipe_chunk_size_fractional(ctx):
    ctx.run_recipe({"pipeline.chunk_size": 2.5})


@row("recipe", "pipeline.end before pipeline.start", ValueError, ("start", "end"))
def _recipe_end_before_start(ctx):
    ctx.run_recipe({"pipeline.start": 100, "pipeline.end": 50})


@row("recipe", "pipeline.poll_seconds negative (live mode)", ValueError, "poll_seconds")
def _recipe_poll_seconds_negative(ctx):
    ctx.run_recipe({"pipeline.live": True, "pipeline.poll_seconds": -1})


@row("recipe", "pipeline.idle_timeout negative (live mode)", ValueError, "idle_timeout")
def _recipe_idle_timeout_negative(ctx):
    ctx.run_recipe({"pipeline.live": True, "pipeline.idle_timeout": -3})


@row("recipe", "pipeline.end in live mode", ValueError, "end")
def _recipe_end_in_live_mode(ctx):
    ctx.run_recipe({"pipeline.live": True, "pipeline.end": 5})


@row("recipe", "pipeline.warm_start not a boolean", SystemExit, "warm_start")
def _recipe_warm_start_not_bool(ctx):
    ctx.run_recipe({"pipeline.warm_start": "maybe"})


@row("recipe", "pipeline.output_dir an existing file", FileExistsError, "{file}")
def _recipe_output_dir_is_a_file(ctx):
    ctx.run_recipe({"pipeline.output_dir": ctx.path("results.txt", b"mine")})


@row("recipe", "pipeline.evaluation.every 0", ValueError, "every")
def _recipe_evaluation_every_zero(ctx):
    ctx.run_recipe({"pipeline.evaluation": {"every": 0}})


@row("recipe", "pipeline.evaluation.metrics unknown", ValueError, "'nope'")
def _recipe_evaluation_unknown_metric(ctx):
    ctx.run_recipe({"pipeline.evaluation": {"every": 100, "metrics": ["nope"]}})


@row("recipe", "trigger num_samples 0", ValueError, "num_samples")
def _recipe_trigger_num_samples_zero(ctx):
    ctx.run_recipe({"pipeline.trigger": {"class_path": "lightning_modyn.triggers.DataAmountTrigger",
                                         "init_args": {"num_samples": 0}}})


@row("recipe", "TimeTrigger every negative", ValueError, "every")
def _recipe_time_trigger_negative(ctx):
    ctx.run_recipe({"pipeline.trigger": {"class_path": "lightning_modyn.triggers.TimeTrigger",
                                         "init_args": {"every": -4}}})


@row("recipe", "selection tail_triggers negative", ValueError, "tail_triggers")
def _recipe_selection_negative(ctx):
    ctx.run_recipe({"pipeline.selection": {"class_path": "lightning_modyn.selection.NewData",
                                           "init_args": {"tail_triggers": -1}}})


@row("recipe", "trainer.max_epochs negative", MisconfigurationException, "max_epochs")
def _recipe_max_epochs_negative(ctx):
    ctx.run_recipe({"trainer.max_epochs": -5})


@row("recipe", "trainer.devices 0", MisconfigurationException, "devices")
def _recipe_devices_zero(ctx):
    ctx.run_recipe({"trainer.devices": 0})


@row("recipe", "lightning-modyn run in a new process: unknown class_path", CliError, "NoSuchTrigger")
def _cli_run_unknown_class_path_subprocess(ctx):
    recipe = ctx.recipe({"pipeline.trigger": {"class_path": "lightning_modyn.triggers.NoSuchTrigger"}})
    ctx.cli_subprocess("run", "--config", recipe)


@row("recipe", "lightning-modyn run in a new process: pipeline.seed -1", CliError, "pipeline.seed")
def _cli_run_bad_seed_subprocess(ctx):
    ctx.cli_subprocess("run", "--config", ctx.recipe({"pipeline.seed": -1}))


@row("recipe", "lightning-modyn demo --samples -5 (an error naming nothing, after work, before)", CliError,
     "--samples")
def _cli_demo_negative_samples(ctx):
    ctx.cli("demo", str(ctx.tmp / "demo"), "--samples", "-5", "--rows", "10")


@row("recipe", "lightning-modyn info on a directory that is not a store", CliError,
     ("{dir}", "not a lightning-modyn store"))
def _cli_info_not_a_store(ctx):
    ctx.cli("info", ctx.folder("plain", {"notes.txt": b"mine"}))


# ====================================================================== the table as markdown
def _error_name(error) -> str:
    if error is None:
        return ""
    errors = error if isinstance(error, tuple) else (error,)
    names = []
    for e in errors:
        names.append("exit status 2 (argument error)" if e is SystemExit else
                     "non-zero exit, message on stderr" if e is CliError else e.__name__)
    return " / ".join(names)


def _culprit_text(culprit) -> str:
    if isinstance(culprit, re.Pattern):
        return f"`/{culprit.pattern}/`"
    text = re.sub(r"\{(\w+)\}", lambda m: f"<{PLACEHOLDERS.get(m.group(1), m.group(1))}>", culprit)
    return f"`{text}`".replace("|", "\\|")


def markdown(rows: list[Row] | None = None) -> str:
    """The catalogue as a markdown table per area: kind, error class, culprit the message names."""
    rows = ROWS if rows is None else rows
    lines = [f"{len(rows)} kinds of bad input: "
             + ", ".join(f"{sum(r.area == a for r in rows)} {label}" for a, label in AREAS.items()) + ".", ""]
    for area, label in AREAS.items():
        mine = [r for r in rows if r.area == area]
        lines += [f"### {label} ({len(mine)})", "", "| Kind of bad input | Error | Culprit named |", "|---|---|---|"]
        for r in mine:
            error = _error_name(r.error) if r.warning is None else f"no error; {r.warning.__name__}"
            culprit = ", ".join(_culprit_text(c) for c in r.culprit)
            lines.append(f"| {r.wrong.replace('|', '/')} | {error} | {culprit} |")
        lines.append("")
    return "\n".join(lines)
