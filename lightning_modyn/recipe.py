"""``lightning-modyn run``: a recipe is a LightningCLI config — ``model``, ``data``, ``trainer`` as in Lightning,
plus ``pipeline`` (trigger, selection, evaluation) and an optional ``dataset`` generator. Only ``class_path`` /
``init_args`` select code: no field is evaluated as Python source.

This is the top layer: it joins the pipeline, the evaluation and the bundled datasets into one command."""

from __future__ import annotations

import functools
import json
import importlib
import inspect
import re
import os
import sys
import time
from typing import Any

import fsspec
import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_modyn.data import ModynDataModule
from lightning_modyn.datasets.generator import StreamGenerator
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.pipeline.config import Pipeline
from lightning_modyn.pipeline.loop import ContinualLoop, RunResult
from lightning_modyn.pipeline.progress import STAGES, lightning_banners, say
from lightning_modyn.pipeline.state import STATE_FILE
from lightning_modyn.store import SampleStore, StoreError, StoreNotFoundError


class RecipePipeline(Pipeline):
    """The ``pipeline`` section of a recipe: :class:`~lightning_modyn.pipeline.config.Pipeline`, with the
    evaluation given as the settings of an :class:`~lightning_modyn.evaluation.Evaluation` (no ``class_path``
    needed)."""

    def __init__(self, evaluation: Evaluation | None = None, **kwargs: Any) -> None:
        super().__init__(evaluation=evaluation, **kwargs)


class ModynCLI(LightningCLI):
    """LightningCLI with the ``pipeline`` and ``dataset`` sections."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RecipePipeline, "pipeline", fail_untyped=True)
        parser.add_subclass_arguments(StreamGenerator, "dataset", required=False)

    def _set_seed(self) -> None:
        try:
            super()._set_seed()
        except ValueError as err:  # Lightning's message names the value only
            raise ValueError(f"seed_everything: {err}") from None


_REFUSED_MODULES = {"builtins", "os", "posix", "nt", "sys", "subprocess", "shutil", "importlib", "pickle", "marshal",
                    "runpy", "code", "codeop", "ctypes", "pty", "socket", "webbrowser", "pdb", "shelve"}


def refuse_code_execution(config: Any, path: str = "") -> None:
    """Refuse config values that are functions of standard modules that run programs, evaluate code or unpickle
    (``os.system``, ``builtins.eval``, ``pickle.loads``...), given where a callable is expected.

    A guard against the obvious, not a sandbox: a recipe is trusted code (docs/pipeline.md), since any
    ``class_path`` imports and runs code of an installed package. jsonargparse refuses source strings.
    """
    for key, value in _children(config):
        where = f"{path}.{key}" if path else str(key)
        name = _refused_name(value)
        if name is not None:
            raise ValueError(f"config field {where!r} names {name}: refused, a recipe may not run programs, "
                             "evaluate code or unpickle")
        refuse_code_execution(value, where)


def _children(config: Any):
    """(key, value) pairs of a parsed config node: a jsonargparse Namespace, dict, list or tuple."""
    if isinstance(config, dict):
        return config.items()
    if isinstance(config, (list, tuple)):
        return enumerate(config)
    if type(config).__name__ == "Namespace":
        return vars(config).items()
    return ()


def _refused_name(value: Any) -> str | None:
    """The dotted name of ``value`` when it is (or names) a function of a refused module, else None."""
    if isinstance(value, str):
        return value if _names_refused_routine(value) else None
    if callable(value) and (inspect.isroutine(value) or isinstance(value, functools.partial)):
        # a C implementation names its own module (pickle.loads is _pickle.loads): compare without the underscore
        module = (getattr(value, "__module__", None) or "").split(".")[0].lstrip("_")
        if module in _REFUSED_MODULES:
            return f"{module}.{getattr(value, '__name__', value)}"
    return None


def _names_refused_routine(text: str) -> bool:
    """Whether ``text`` is an import path (``os.system``) of a function of a refused module."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", text) or text.split(".")[0] not in _REFUSED_MODULES:
        return False
    module_name, _, attr = text.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    return inspect.isroutine(target)


def _store_missing(url: str) -> StoreNotFoundError | None:
    """Why there is no store at ``url`` (nothing there, or something that is not a store), or None if there is."""
    try:
        SampleStore.open(url, readonly=True).close()
        return None
    except StoreNotFoundError as err:
        return err


def summary_table(result: RunResult) -> str:
    """The table printed at the end of a run."""
    lines = ["", f"{'trigger':>7} {'timestamp':>12} {'new':>8} {'selected':>8} {'trained':>8} {'seconds':>8}"]
    for t in result.triggers:
        lines.append(f"{t['trigger_id']:>7} {t['timestamp']:>12} {t['new_samples']:>8} "
                     f"{t.get('samples_selected', ''):>8} {t['samples_trained']:>8} {t['train_seconds']:>8.1f}")
    total = sum(t["train_seconds"] for t in result.triggers)
    if result.num_triggers == 0:
        lines.append(f"the trigger never fired over {result.stream_samples:,} samples: no model was trained")
    lines.append(f"{result.num_triggers} trigger(s) over {result.stream_samples:,} samples; "
                 f"{total:.1f}s of training")
    stages = {stage: sum(t.get("seconds", {}).get(stage, 0.0) for t in result.triggers) for stage in STAGES}
    if any(stages.values()):
        lines.append("seconds per stage (costs.csv, costs.png): " + ", ".join(
            f"{stage} {seconds:.1f}" for stage, seconds in stages.items()))
    if result.evaluation:
        for metric, s in result.evaluation["summary"].items():
            mean, bwt, fwt = s["composite_mean"], s.get("backward_transfer"), s.get("forward_transfer")
            covered = s.get("composite_windows")
            total_windows = len(result.evaluation["windows"])
            over = ("windows" if covered is None or covered == total_windows
                    else f"the {covered} of {total_windows} windows that had a model")
            lines.append(f"{metric} of the currently active model, mean over {over}: "
                         f"{'-' if mean is None else f'{mean:.4f}'}; backward transfer: "
                         f"{'-' if bwt is None else f'{bwt:+.4f}'}; forward transfer: "
                         f"{'-' if fwt is None else f'{fwt:+.4f}'}")
        for name, part in result.evaluation.get("datasets", {}).items():
            for metric, s in part["summary"].items():
                mean = s["composite_mean"]
                lines.append(f"{metric} of the currently active model on {name}, mean over the windows that had a "
                             f"model: {'-' if mean is None else f'{mean:.4f}'}")
    lines.append(f"output: {os.path.abspath(result.output_dir)}")
    return "\n".join(lines)


# settings that do not change which models a run trains: a rerun may change them and still resume
_RESUMABLE_SETTINGS = ("config", "pipeline.evaluation", "pipeline.output_dir", "pipeline.progress",
                       "data.num_workers", "data.worker_mode", "data.prefetch_factor", "data.pin_memory", "trainer.enable_progress_bar",
                       "trainer.enable_model_summary", "trainer.logger", "trainer.default_root_dir",
                       "trainer.log_every_n_steps")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _result_settings(config: dict) -> dict[str, Any]:
    """The settings of a parsed recipe that decide which models the run trains, as dotted keys (an empty list or
    mapping counts as unset, as None does)."""
    return {k: v for k, v in _flat(config).items()
            if v not in (None, [], {}) and not any(k == p or k.startswith(p + ".") for p in _RESUMABLE_SETTINGS)}


def _refuse_resuming_other_settings(cli: LightningCLI, output_dir: str) -> None:
    """A rerun into an output folder resumes the run there: refuse it when the recipe now says something else
    about the models (its ``config.yaml`` always describes the models on disk)."""
    saved_path = os.path.join(output_dir, "config.yaml")
    if not (os.path.exists(saved_path) and os.path.exists(os.path.join(output_dir, STATE_FILE))):
        return
    with open(saved_path) as handle:
        saved = _result_settings(yaml.safe_load(handle) or {})
    now = _result_settings(yaml.safe_load(cli.parser.dump(cli.config, skip_check=True)))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ValueError(f"pipeline.output_dir {output_dir} holds a run made with other settings ({shown}{more}); "
                         "resuming would mix its models with these settings. Point pipeline.output_dir at a new "
                         f"folder, or delete {output_dir} to start afresh")


def _ensure_heldout(generator: StreamGenerator) -> None:
    """Write the generator's held-out stream if its store is missing; refuse one that holds another stream."""
    url = generator.heldout_url
    wanted = json.loads(json.dumps(generator.describe_heldout()))
    _remove_if_unfinished(url)
    if _store_missing(url) is None:
        with SampleStore.open(url, readonly=True) as store:
            held = store.attributes.get("stream")
        if held != wanted:
            raise ValueError(f"dataset.heldout_store: {url} holds another stream ({held!r}) than this recipe's "
                             "held-out stream; give the recipe a new heldout_store, or remove the old one")
        return
    _generate(url, generator.write_heldout, wanted, f"the held-out stream of {type(generator).__name__}",
              generator.timeline())


def _generate(url: str, write: Any, described: dict, what: str, timeline: dict | None = None) -> None:
    """Create the store at ``url`` and fill it with ``write(store)``, marked unfinished until the last sample is
    in: a run killed meanwhile leaves a store that the next run recognises as its own and writes again. The
    stream's ``timeline`` (for the plots) is stored beside it."""
    t0 = time.perf_counter()
    say("writing %s into %s", what, url)
    with SampleStore.create(url) as store:
        store.set_attribute("stream", {**described, UNFINISHED: True})
        if timeline is not None:
            store.set_attribute("timeline", json.loads(json.dumps(timeline)))
        keys = write(store)
        store.set_attribute("stream", described)
    say("wrote %s samples in %.1fs", f"{len(keys):,}", time.perf_counter() - t0)


UNFINISHED = "unfinished"
"""Set in a generated store's ``stream`` attribute until the generator has written all of it."""


def _remove_if_unfinished(url: str) -> None:
    """Remove a store that a recipe run started to generate and did not finish (it says so itself): the run
    was killed, and training on part of a stream would be wrong without a word."""
    if _store_missing(url) is not None:
        return
    try:
        with SampleStore.open(url, readonly=True) as store:
            held = store.attributes.get("stream")
    except StoreError:
        return  # not a store this code can read: the checks that follow say what it is
    if isinstance(held, dict) and held.get(UNFINISHED):
        say("%s was left unfinished by a run stopped while writing it: writing it again", url)
        fs, path = fsspec.core.url_to_fs(url)
        fs.rm(path, recursive=True)


def _check_yaml(argv: list[str]) -> None:
    """Refuse a ``--config`` file that is not YAML, naming the file and the line (the parser names neither)."""
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.partition("=")[2] if arg.startswith(
            "--config=") else None
        if not path or not os.path.isfile(path):
            continue  # the parser says that a file is missing
        try:
            with open(path) as handle:
                yaml.safe_load(handle)
        except yaml.YAMLError as err:
            print(f"lightning-modyn run: error: {path} is not valid YAML: {err}", file=sys.stderr)
            raise SystemExit(2) from None


def run_recipe(argv: list[str]) -> RunResult | None:
    """Parse a recipe, make the store if a ``dataset`` is given and the store is missing, run the loop."""
    _check_yaml(argv)
    saved_argv, sys.argv = sys.argv, sys.argv[:1]  # the recipe arguments come through ``args`` only
    try:
        with lightning_banners(False):  # LightningCLI makes a Trainer too: the loop's first fit shows the banners
            cli = ModynCLI(model_class=L.LightningModule, subclass_mode_model=True,
                           datamodule_class=ModynDataModule, run=False, args=argv, save_config_callback=None,
                           auto_configure_optimizers=False,
                           parser_kwargs={"prog": "lightning-modyn run", "parser_mode": "yaml"})
    finally:
        sys.argv = saved_argv
    refuse_code_execution(cli.config)
    _refuse_resuming_other_settings(cli, cli.config_init["pipeline"].output_dir)
    config: Any = cli.config_init
    datamodule: ModynDataModule = cli.datamodule
    pipeline: Pipeline = config["pipeline"]
    generator: StreamGenerator | None = config.get("dataset")
    if generator is not None:
        _remove_if_unfinished(datamodule._store_url)
    missing = _store_missing(datamodule._store_url)
    if missing is not None:
        if generator is None:
            raise StoreNotFoundError(f"data.store: {missing}; the recipe has no dataset section to generate one")
        _generate(datamodule._store_url, generator.write, generator.describe(), type(generator).__name__,
                  generator.timeline())
    elif generator is not None:
        with SampleStore.open(datamodule._store_url, readonly=True) as store:
            generator.check_store(store)
    if generator is not None and generator.heldout_url is not None:
        _ensure_heldout(generator)
    os.makedirs(pipeline.output_dir, exist_ok=True)
    if _launched_rank() == 0:  # ranks that Lightning's ddp launcher started run this again: rank 0 writes
        cli.parser.save(cli.config, os.path.join(pipeline.output_dir, "config.yaml"), overwrite=True,
                        skip_check=True)
    # the Trainer arguments as LightningCLI parsed them: the loop makes each fit's Trainer from them
    loop = ContinualLoop(cli.model, datamodule, pipeline, trainer=dict(config["trainer"]))
    result = loop.run()
    if loop.global_rank == 0:  # under ddp the other ranks run the CLI too; they stay quiet
        print(summary_table(result), flush=True)
    return result


def _launched_rank() -> int:
    """This process's global rank as set by a launcher (torchrun, SLURM or Lightning's ddp), 0 otherwise."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    local = os.environ.get("LOCAL_RANK", "0")  # Lightning's launcher on one node sets only this
    return int(local) if local.isdigit() else 0
