"""ContinualLoop: replay, trigger, select, fit, register, evaluate, resume."""

from __future__ import annotations

import json
import logging
import os

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_modyn import ModynDataModule
from lightning_modyn.evaluation import Evaluation
from lightning_modyn.pipeline import ContinualLoop, ModelRegistry, Pipeline
from lightning_modyn.selection import AllData, NewData
from lightning_modyn.triggers import DataDriftTrigger, PerformanceTrigger, StaticThreshold
from lightning_modyn.triggers.base import Trigger

DTYPE = np.dtype([("label", "<i4"), ("x", "<f4", (2,))])


class EveryN(Trigger):
    """A test trigger: fires at every n-th sample of the stream."""

    def __init__(self, n: int, fail_after_model: int | None = None) -> None:
        self.n, self.seen, self.models = n, 0, []
        self.fail_after_model = fail_after_model

    def inform(self, keys, timestamps, labels):
        positions = [i for i in range(len(keys)) if (self.seen + i + 1) % self.n == 0]
        self.seen += len(keys)
        return np.array(positions, dtype=np.int64)

    def inform_new_model(self, model_id, trained_keys, train_seconds):
        self.models.append((model_id, len(trained_keys)))
        if self.fail_after_model is not None and model_id == self.fail_after_model:
            raise KeyboardInterrupt("simulated crash")

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


class Classifier(L.LightningModule):
    """A linear classifier of two features into ``classes`` classes."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, classes)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def make_loop(store, out, trigger, trainer=None, **kwargs):
    dm = ModynDataModule(store, batch_size=50, seed=0)
    torch.manual_seed(0)  # the same initial weights in every run
    kwargs.setdefault("progress", False)
    return ContinualLoop(Classifier(), dm, trigger, trainer=trainer or {"max_epochs": 3}, output_dir=str(out),
                         chunk_size=128, **kwargs)


def test_loop_trains_a_model_per_trigger_and_evaluates(drifting_store, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(tmp_path / "logs"), name="eval")
    loop = make_loop(drifting_store, tmp_path / "run", EveryN(300), evaluation=Evaluation(every=100, logger=logger))
    result = loop.run()
    assert result.num_triggers == 4 and result.stream_samples == 1200
    assert [t["samples_trained"] for t in result.triggers] == [300] * 4
    assert [t["timestamp"] for t in result.triggers] == [299, 599, 899, 1199]
    assert all(os.path.exists(tmp_path / "run" / t["path"]) for t in result.triggers)
    ev = json.load(open(tmp_path / "run" / "results.json"))
    assert len(ev["windows"]) == 12 and len(ev["matrix"]["accuracy"]) == 4
    acc = np.array(ev["matrix"]["accuracy"])
    assert acc[1, :6].mean() > 0.85 and acc[1, 6:].mean() < 0.2  # trained before the flip: wrong after it
    assert acc[3, 6:].mean() > 0.85  # retrained after the flip
    assert ev["active_model"][:3] == [-1, -1, -1] and ev["active_model"][3] == 0
    # the currently trained model of a window is the first whose trigger comes at or after the window's start
    assert ev["trained_model"] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ev["trained_composite"]["accuracy"] == [acc[k, j] for j, k in enumerate(ev["trained_model"])]
    bwt = np.mean([acc[3, j] - acc[k, j] for j, k in enumerate(ev["trained_model"]) if k < 3])
    assert ev["summary"]["accuracy"]["backward_transfer"] == pytest.approx(bwt)
    assert bwt < -0.3  # the flip makes the final model wrong on the first half: negative backward transfer
    summary = ev["summary"]["accuracy"]  # the 3 windows before the first model count nowhere, and it says so
    assert summary["composite_windows"] == 9 and summary["composite_coverage"] == pytest.approx(0.75)
    assert summary["composite_mean"] == pytest.approx(np.mean([v for v in ev["composite"]["accuracy"][3:]]))
    from lightning_modyn.recipe import summary_table

    assert "mean over the 9 of 12 windows that had a model" in summary_table(result)
    logged = open(logger.experiment.metrics_file_path).read()
    assert "eval/accuracy_active" in logged and "eval/accuracy_backward_transfer" in logged
    assert (tmp_path / "run" / "accuracy_over_time.png").exists()
    assert (tmp_path / "run" / "matrix_accuracy.png").exists()
    assert "model_trigger" in open(tmp_path / "run" / "results.csv").readline()


def test_selection_policy_decides_the_training_data(drifting_store, tmp_path):
    result = make_loop(drifting_store, tmp_path / "all", EveryN(400), selection=AllData()).run()
    assert [t["samples_trained"] for t in result.triggers] == [400, 800, 1200]
    limited = make_loop(drifting_store, tmp_path / "lim", EveryN(400),
                        selection=NewData(tail_triggers=1, limit=500)).run()
    assert [t["samples_trained"] for t in limited.triggers] == [400, 500, 500]


def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(drifting_store, tmp_path):
    clean = make_loop(drifting_store, tmp_path / "clean", EveryN(300)).run()
    with pytest.raises(KeyboardInterrupt):
        make_loop(drifting_store, tmp_path / "killed", EveryN(300, fail_after_model=1)).run()
    assert len(ModelRegistry(str(tmp_path / "killed"))) == 2
    resumed_trigger = EveryN(300)
    resumed = make_loop(drifting_store, tmp_path / "killed", resumed_trigger).run()
    assert resumed.num_triggers == 4
    for a, b in zip(clean.triggers, resumed.triggers):
        wa = ModelRegistry(str(tmp_path / "clean")).weights(a["trigger_id"])
        wb = ModelRegistry(str(tmp_path / "killed")).weights(b["trigger_id"])
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"model of trigger {a['trigger_id']} differs"
        assert a["samples_trained"] == b["samples_trained"]


def test_from_scratch_resets_weights_before_each_fit(drifting_store, tmp_path):
    seen = []

    class Spy(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen.append(pl_module.net.weight.detach().clone())

    loop = make_loop(drifting_store, tmp_path / "scratch", EveryN(600), warm_start=False,
                     trainer={"max_epochs": 1, "callbacks": [Spy()]})
    loop.run()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])


def test_trigger_that_never_fires_finishes_and_says_so(drifting_store, tmp_path, caplog):
    loop = make_loop(drifting_store, tmp_path / "never", EveryN(10_000), progress=True)
    with caplog.at_level(logging.INFO, logger="lightning_modyn"), \
            pytest.warns(RuntimeWarning, match="never fired over 1200 samples"):
        result = loop.run()
    assert result.num_triggers == 0
    assert "EveryN never fired over 1,200 samples; no model was trained" in caplog.text


def test_bad_inputs(drifting_store, tmp_path):
    dm = ModynDataModule(drifting_store)
    with pytest.raises(TypeError, match="pipeline must be a Pipeline or a lightning_modyn Trigger, got function"):
        ContinualLoop(Classifier(), dm, lambda *a: [])
    with pytest.raises(TypeError, match="pipeline.trigger must be a lightning_modyn Trigger, got function"):
        Pipeline(lambda *a: [])
    with pytest.raises(TypeError, match=r"give the settings \['chunk_size'\] in the Pipeline, not beside it"):
        ContinualLoop(Classifier(), dm, Pipeline(EveryN(5)), chunk_size=10)
    with pytest.raises(ValueError, match="pipeline.chunk_size must be an integer >= 1, got 0"):
        ContinualLoop(Classifier(), dm, EveryN(5), chunk_size=0)
    with pytest.raises(TypeError, match="pipeline.evaluation must be an Evaluation"):
        Pipeline(EveryN(5), evaluation="accuracy")
    with pytest.raises(TypeError, match="trainer must be a dict of lightning.Trainer arguments"):
        ContinualLoop(Classifier(), dm, EveryN(5), trainer=["max_epochs", 1])
    with pytest.raises(TypeError, match="must be a LightningModule"):
        ContinualLoop(torch.nn.Linear(2, 2), dm, EveryN(5))

    class Bad(EveryN):
        def inform(self, keys, timestamps, labels):
            return np.array([5, 3])

    with pytest.raises(ValueError, match="must increase within the chunk"):
        make_loop(drifting_store, tmp_path / "bad", Bad(1)).run()
    with pytest.raises(ValueError, match="the stream is empty"):
        make_loop(drifting_store, tmp_path / "empty", EveryN(5), start=5000).run()
    with pytest.raises(ValueError, match="unknown metric"):
        Evaluation(every=10, metrics=("accuracy", "bleu"))


def test_stateful_selection_resumes_with_the_loop(drifting_store, tmp_path):
    from lightning_modyn.selection import RandomNoReplacement

    clean = make_loop(drifting_store, tmp_path / "clean", EveryN(300),
                      selection=RandomNoReplacement(num_samples=250, seed=1)).run()
    with pytest.raises(KeyboardInterrupt):
        make_loop(drifting_store, tmp_path / "killed", EveryN(300, fail_after_model=1),
                  selection=RandomNoReplacement(num_samples=250, seed=1)).run()
    resumed = make_loop(drifting_store, tmp_path / "killed", EveryN(300),
                        selection=RandomNoReplacement(num_samples=250, seed=1)).run()
    for a, b in zip(clean.triggers, resumed.triggers):
        wa = ModelRegistry(str(tmp_path / "clean")).weights(a["trigger_id"])
        wb = ModelRegistry(str(tmp_path / "killed")).weights(b["trigger_id"])
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"model of trigger {a['trigger_id']} differs"


def test_windows_between_triggers_score_each_model_on_the_data_it_served(drifting_store, tmp_path):
    from lightning_modyn.evaluation import BetweenTriggersWindows

    loop = make_loop(drifting_store, tmp_path / "run", EveryN(300),
                     evaluation=Evaluation(windows=BetweenTriggersWindows(), plots=False))
    result = loop.run()
    ev = result.evaluation
    assert [(w["start"], w["end"], w["samples"]) for w in ev["windows"]] == [
        (0, 300, 300), (300, 600, 300), (600, 900, 300), (900, 1200, 300)]
    assert ev["active_model"] == [-1, 0, 1, 2]  # model i serves exactly the window after its trigger
    acc = np.array(ev["matrix"]["accuracy"])
    assert ev["composite"]["accuracy"][1:] == [acc[0, 1], acc[1, 2], acc[2, 3]]
    assert ev["composite"]["accuracy"][2] < 0.2  # model 1 (before the flip at 600) serves the flipped data


def test_windows_at_offsets_from_triggers_and_static_windows():
    from lightning_modyn.evaluation import StaticWindows, TriggerOffsetWindows

    around = TriggerOffsetWindows(offsets=[-100, 1], length=100)
    assert around.windows(0, 1199, [299, 1199]) == [(199, 299), (300, 400), (1099, 1199), (1200, 1300)]
    assert around.windows(0, 1199, []) == []
    assert StaticWindows([[0, 600]]).windows(0, 1199, [299]) == [(0, 600)]
    with pytest.raises(ValueError, match=r"window 1 must be \[start, end\] with start < end, got \[5, 5\]"):
        StaticWindows([[0, 1], [5, 5]])
    with pytest.raises(ValueError, match="at least one"):
        StaticWindows([])
    with pytest.raises(ValueError, match="at least one offset"):
        TriggerOffsetWindows([], 10)
    with pytest.raises(ValueError, match=r"length must be a whole number \(int64\) >= 1 \(a time span in the "
                                         r"stream.s units\), got 0"):
        TriggerOffsetWindows([0], 0)


def test_windows_around_triggers_when_no_trigger_fired_warn_and_evaluate_nothing(drifting_store, tmp_path):
    from lightning_modyn.evaluation import TriggerOffsetWindows

    loop = make_loop(drifting_store, tmp_path / "run", EveryN(10_000),
                     evaluation=Evaluation(windows=TriggerOffsetWindows([1], 100), plots=False))
    with pytest.warns(RuntimeWarning) as record:
        result = loop.run()
    assert result.num_triggers == 0 and result.evaluation == {}
    assert any("no windows around triggers" in str(w.message) for w in record)
    assert not (tmp_path / "run" / "results.json").exists()


class Deep(Classifier):
    """A hidden layer ``body`` and a ``head``; ``embed`` only when asked for."""

    def __init__(self, with_embed: bool = False) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.ReLU())
        self.head = torch.nn.Linear(6, 2)
        self.unused = torch.nn.Linear(2, 2)
        if with_embed:
            self.embed = lambda x: self.body(x) * 10

    def forward(self, x):
        return self.head(self.body(x))


def test_drift_embeddings_come_from_the_named_layer_else_embed_else_the_outputs_with_a_warning(drifting_store, caplog):
    keys = np.arange(0, 200, 7)
    x = torch.from_numpy(drifting_store.get_records(keys)["x"].copy())

    def context(model, **kwargs):
        loop = ContinualLoop(model, ModynDataModule(drifting_store, batch_size=50), EveryN(100), **kwargs)
        loop.models_trained = 1  # as after the first fit: embeddings come from the model, not the inputs
        return loop.context

    model = Deep()
    with torch.no_grad():
        hidden, logits = model.body[0](x).numpy(), model(x).numpy()
    assert np.allclose(context(model, embedding_layer="body.0").embed(keys), hidden, atol=1e-6)
    own = Deep(with_embed=True)
    with torch.no_grad():
        assert np.allclose(context(own).embed(keys), (own.body(x) * 10).numpy(), atol=1e-5)
    with caplog.at_level("WARNING", logger="lightning_modyn.pipeline.loop"):
        ctx = context(model)
        assert np.allclose(ctx.embed(keys), logits, atol=1e-6)
        ctx.embed(keys)
    said = [r.getMessage() for r in caplog.records if "defines no embed()" in r.getMessage()]
    assert len(said) == 1 and "embedding_layer='backbone.fc1'" in said[0]  # once, with the fix
    with pytest.raises(ValueError, match=r"embedding_layer 'body.9' is not a module of Deep; its modules: net, body, "
                                         r"body.0, body.1, head, unused"):
        context(model, embedding_layer="body.9")
    with pytest.raises(RuntimeError, match="embedding_layer 'unused' did not run in Deep.forward"):
        context(model, embedding_layer="unused").embed(keys)


@pytest.mark.parametrize("make_trigger", [
    lambda: PerformanceTrigger(detection_interval=100, policies=StaticThreshold(1.0, direction="lower")),
    lambda: PerformanceTrigger(detection_interval=100, policies=StaticThreshold(0.8, direction="lower")),
    lambda: DataDriftTrigger({"mmd": StaticThreshold(0.002)}, detection_interval=100, sample_size=100),
], ids=["accuracy-below-1", "accuracy-below-0.8", "drift"])
def test_model_aware_decisions_do_not_depend_on_the_chunk_size(drifting_store, tmp_path, make_trigger):
    fires = {}
    for chunk_size in (100, 1000):
        dm = ModynDataModule(drifting_store, batch_size=50, seed=0)
        torch.manual_seed(0)
        trigger = make_trigger()
        loop = ContinualLoop(Classifier(), dm, trigger, trainer={"max_epochs": 2},
                             output_dir=str(tmp_path / f"chunks-{chunk_size}"), chunk_size=chunk_size, progress=False)
        result = loop.run()
        fires[chunk_size] = [t["stream_position"] for t in result.triggers]
        # every detection point was decided once, and the ones after a fire with the model trained at that fire
        assert [e["position"] for e in trigger.evaluations] == list(range(99, 1200, 100))
    assert fires[100] == fires[1000]
    assert len(fires[100]) >= 2  # models really were trained in between


def test_a_model_aware_trigger_whose_state_is_incomplete_is_refused_clearly(drifting_store, tmp_path):
    class Forgetful(EveryN):
        uses_model = True

        def state_dict(self):  # leaves out how many samples it has seen: it cannot be rewound
            return {}

        def load_state_dict(self, state):
            pass

    with pytest.raises(RuntimeError, match=r"Forgetful fired at \[71\] when told the same samples again after "
                                           r"load_state_dict \(first 99\); its state_dict must hold everything"):
        make_loop(drifting_store, tmp_path / "out", Forgetful(100)).run()


def test_models_are_evaluated_as_the_run_goes_and_a_resumed_run_does_not_measure_them_again(drifting_store, tmp_path,
                                                                                            monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        make_loop(drifting_store, out, EveryN(300, fail_after_model=1), evaluation=Evaluation(every=200)).run()
    partial = json.load(open(out / "results.json"))  # written after the first fit, before the crash
    assert [t["trigger_id"] for t in partial["triggers"]] == [0] and len(partial["windows"]) == 6
    assert sorted(os.listdir(out / "evaluation")) == ["initial.json", "trigger-0000.json"]
    loaded = []
    real = ModelRegistry.load_into
    monkeypatch.setattr(ModelRegistry, "load_into", lambda self, t, m: (loaded.append(t), real(self, t, m))[1])
    result = make_loop(drifting_store, out, EveryN(300), evaluation=Evaluation(every=200)).run()
    # model 0 was loaded once, by the loop resuming from it; its windows came from the run before the crash
    assert result.num_triggers == 4 and loaded.count(0) == 1
    clean = make_loop(drifting_store, tmp_path / "clean", EveryN(300), evaluation=Evaluation(every=200)).run()
    assert result.evaluation["matrix"] == clean.evaluation["matrix"]


def test_lightnings_banners_are_shown_once_per_run(drifting_store, tmp_path, caplog):
    with caplog.at_level("INFO", logger="lightning.pytorch.utilities.rank_zero"):
        result = make_loop(drifting_store, tmp_path / "out", EveryN(300)).run()
        assert logging.getLogger("lightning.pytorch.utilities.rank_zero").level == logging.INFO  # put back
    banners = [r for r in caplog.records if r.getMessage().startswith("GPU available:")]
    assert result.num_triggers == 4 and len(banners) == 1  # four fits, one banner
