"""Downsampling: scorers against closed forms, selection rules' statistical properties, and the two callbacks."""

from __future__ import annotations

import tempfile

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_modyn import ModynDataModule, SampleStore
from lightning_modyn.selection.downsampling import (
    EL2N,
    RS2,
    BatchThenSample,
    Craig,
    ForgettingEvents,
    GradMatch,
    GradNorm,
    GraNd,
    KCenter,
    Loss,
    RhoLoss,
    SampleThenBatch,
    ScoringBatch,
    ScoringForward,
    SelectiveBackprop,
    Submodular,
    Switching,
    Uncertainty,
    Uniform,
    strategy_by_name,
    selection_weights,
    weighted_mean,
)
from lightning_modyn.selection.downsampling import rules
from lightning_modyn.selection.downsampling.callbacks import SCORES_FILE
from lightning_modyn.selection.downsampling.context import SelectionContext
from lightning_modyn.selection.downsampling.kcenter import kcenter_greedy

DIM, CLASSES = 4, 3


# ---------------------------------------------------------------------- a tiny model and data
class TinyClassifier(L.LightningModule):
    """A plain LightningModule: one hidden layer, a linear head; records the batches its training_step saw."""

    def __init__(self, weighted: bool = False, hidden: bool = True) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(DIM, 8), torch.nn.ReLU()) if hidden else torch.nn.Identity()
        self.head = torch.nn.Linear(8 if hidden else DIM, CLASSES)
        self.weighted = weighted
        self.seen: list[tuple[int, list[int] | None]] = []

    def forward(self, x):
        return self.head(self.body(x.float()))

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((len(y), batch.keys.tolist() if hasattr(batch, "keys") else None))
        losses = F.cross_entropy(self(x), y, reduction="none")
        return weighted_mean(losses, batch) if self.weighted else losses.mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, max_epochs=1,
                    default_root_dir=tempfile.mkdtemp(prefix="downsampling-"))  # where score records go
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def make_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=[("x", "<f4", (DIM,)), ("label", "<i8")])
    rows["label"] = rng.integers(0, CLASSES, n)
    rows["x"] = rng.normal(size=(n, DIM)) + rows["label"][:, None]
    return rows


@pytest.fixture
def store(tmp_path):
    s = SampleStore.create(tmp_path / "store")
    keys = s.append_records(make_rows(600), timestamps=np.arange(600), labels="label")
    yield s, keys
    s.close()


def tensor_loader(n: int = 256, batch_size: int = 64) -> DataLoader:
    rows = make_rows(n, seed=1)
    return DataLoader(TensorDataset(torch.from_numpy(rows["x"]), torch.from_numpy(rows["label"])),
                      batch_size=batch_size)


# ---------------------------------------------------------------------- closed forms
def per_sample_grads(layer: torch.nn.Linear, h: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    rows = []
    for i in range(len(h)):
        layer.zero_grad()
        z = layer(h[i : i + 1])
        if loss == "cross_entropy":
            value = F.cross_entropy(z, y[i : i + 1])
        else:
            value = F.binary_cross_entropy_with_logits(z[:, 0], y[i : i + 1].float())
        value.backward()
        rows.append(torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()]))
    return torch.stack(rows)


@pytest.mark.parametrize("loss,classes", [("cross_entropy", 3), ("binary_cross_entropy", 1)])
def test_last_layer_gradients_match_autograd(loss, classes):
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, classes)
    h = torch.randn(6, 5)
    y = torch.randint(0, max(classes, 2), (6,))
    batch = ScoringBatch.from_outputs(layer(h), y, loss, embeddings=h)
    expected = per_sample_grads(layer, h, y, loss)
    # ours are laid out (weight row-major, bias); autograd's the same
    assert torch.allclose(batch.last_layer_gradients(), expected, atol=1e-5)
    assert torch.allclose(batch.last_layer_gradient_norms(), expected.norm(dim=1), atol=1e-5)
    assert torch.allclose(GradNorm().score(batch), expected.norm(dim=1), atol=1e-5)
    assert torch.allclose(GraNd().score(batch), expected.norm(dim=1), atol=1e-5)


def plain_cross_entropy(logits, targets):
    return F.cross_entropy(logits, targets.long(), reduction="none")


def test_a_loss_of_the_users_own_scores_as_its_built_in_twin_does():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    h, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    built_in = ScoringBatch.from_outputs(layer(h), y, "cross_entropy", embeddings=h)
    custom = ScoringBatch.from_outputs(layer(h), y, plain_cross_entropy, embeddings=h)
    assert torch.allclose(custom.losses, built_in.losses)
    # the closed form of cross-entropy and autograd through the user's function agree, sample by sample
    assert torch.allclose(custom.output_gradients(), built_in.output_gradients(), atol=1e-6)
    assert torch.allclose(custom.last_layer_gradients(), per_sample_grads(layer, h, y, "cross_entropy"), atol=1e-5)
    assert torch.equal(Loss().score(custom), built_in.losses)


def test_a_custom_loss_by_import_path_changes_what_is_selected():
    import custom_recipe_functions as custom

    torch.manual_seed(1)
    logits, y = torch.randn(64, 3) * 3, torch.randint(0, 3, (64,))
    forward = ScoringForward(loss="custom_recipe_functions.focal_loss")
    assert forward.loss is custom.focal_loss
    focal = ScoringBatch.from_outputs(logits, y, forward.loss)
    p_true = torch.softmax(logits, 1)[torch.arange(64), y]
    assert torch.allclose(focal.losses, -(1 - p_true) ** 2 * torch.log(p_true), atol=1e-5)
    # the gradient of the focal loss, not of cross-entropy: check it against autograd sample by sample
    for i in (0, 17, 63):
        z = logits[i : i + 1].clone().requires_grad_(True)
        custom.focal_loss(z, y[i : i + 1]).sum().backward()
        assert torch.allclose(focal.output_gradients()[i], z.grad[0], atol=1e-5)
    assert not torch.allclose(focal.output_gradients(), ScoringBatch.from_outputs(logits, y).output_gradients())


@pytest.mark.parametrize("loss, match", [
    ("custom_recipe_functions.mean_loss", r"loss custom_recipe_functions.mean_loss must return one loss per "
                                          r"sample, a tensor of shape \(8,\) \(reduction='none'\), got \(\); "
                                          r"it gets the logits as \(8, 3\) and the targets as \(8,\)"),
    ("custom_recipe_functions.nope", "loss: module 'custom_recipe_functions' has no 'nope'"),
    ("hinge", "loss must be a callable or one of \\('auto', 'cross_entropy', 'binary_cross_entropy', 'mse'\\)"),
    (lambda z, y: torch.full((len(z),), float("nan")), "returned a loss that is NaN or infinite"),
])
def test_a_loss_that_cannot_score_is_refused_naming_it(loss, match):
    with pytest.raises(ValueError, match=match):
        ScoringBatch.from_outputs(torch.randn(8, 3), torch.randint(0, 3, (8,)), ScoringForward(loss=loss).loss)


def test_a_custom_loss_is_differentiated_inside_inference_mode_too():
    logits, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    expected = ScoringBatch.from_outputs(logits, y, "cross_entropy").output_gradients()
    with torch.inference_mode():
        batch = ScoringBatch.from_outputs(logits, y, plain_cross_entropy)
        assert torch.allclose(batch.output_gradients(), expected, atol=1e-6)
    assert torch.allclose(batch.output_gradients(), expected, atol=1e-6)  # built there, differentiated here


def test_a_custom_loss_that_ignores_the_outputs_has_no_gradient_to_score():
    batch = ScoringBatch.from_outputs(torch.randn(4, 3), torch.zeros(4), lambda z, y: torch.ones(len(z)))
    with pytest.raises(ValueError, match="does not depend on the model's outputs"):
        batch.output_gradients()


class EmbeddingNet(torch.nn.Module):
    """A backbone of two layers and a head; ``embed`` optional."""

    def __init__(self, with_embed: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(DIM, 8), torch.nn.ReLU(), torch.nn.Linear(8, 6),
                                            torch.nn.ReLU())
        self.head = torch.nn.Linear(6, CLASSES)
        if with_embed:
            self.embed = lambda x: self.backbone[:2](x.float()) * 2  # something no hook would see

    def forward(self, x):
        return self.head(self.backbone(x.float()))


def test_embedding_based_strategies_compare_samples_by_the_chosen_embeddings(caplog):
    x, y = torch.randn(40, DIM), torch.randint(0, CLASSES, (40,))
    plain, with_embed = EmbeddingNet(False), EmbeddingNet(True)
    named = ScoringForward(embedding_layer="backbone.0")(plain, (x, y), representations=True)
    assert torch.allclose(named.representations, plain.backbone[0](x))  # the named module's output
    assert named.embeddings is None  # no last-layer hook was needed
    by_embed = ScoringForward()(with_embed, (x, y), representations=True)
    assert torch.allclose(by_embed.sample_embeddings("KCenter"), with_embed.embed(x))
    # a named layer wins over embed()
    assert torch.allclose(ScoringForward(embedding_layer="backbone.2")(with_embed, (x, y),
                                                                        representations=True).representations,
                          with_embed.backbone[2](with_embed.backbone[:2](x)))
    forward = ScoringForward()
    with caplog.at_level("INFO", logger="lightning_modyn"):
        fallback = forward(plain, (x, y), representations=True)
        forward(plain, (x, y), representations=True)
    assert fallback.representations is None
    assert torch.allclose(fallback.sample_embeddings("KCenter"), plain.backbone(x))  # the head's input
    said = [r.getMessage() for r in caplog.records if "compares samples by the input" in r.getMessage()]
    assert said == ["downsampling compares samples by the input of EmbeddingNet's last layer 'head': set "
                    "embedding_layer on the selection callback, or define embed(x) on the model, to choose other "
                    "embeddings"]  # once
    # k-center picks by what it was given: the same picks as k-center greedy on the named layer's outputs
    strategy = KCenter()
    assert strategy.needs_representations and not strategy.needs_embeddings
    picked, _ = strategy.select(named, 5, torch.Generator().manual_seed(0))
    expected = kcenter_greedy(plain.backbone[0](x).detach(), 5, torch.Generator().manual_seed(0))
    assert picked.tolist() == expected.tolist()
    assert KCenter(features="gradients").needs_embeddings and not KCenter(features="gradients").needs_representations


@pytest.mark.parametrize("name, match", [
    ("nope", "embedding_layer 'nope' is not a module of EmbeddingNet; its modules: backbone, backbone.0"),
    ("backbone.1.x", "embedding_layer 'backbone.1.x' is not a module of EmbeddingNet"),
])
def test_an_embedding_layer_that_is_not_there_is_named(name, match):
    with pytest.raises(ValueError, match=match):
        ScoringForward(embedding_layer=name)(EmbeddingNet(False), (torch.randn(4, DIM), torch.zeros(4)),
                                             representations=True)


def test_a_callback_trains_with_k_center_on_a_named_layer(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=100, seed=0)
    dm.set_training_set(keys[:300])
    model = TinyClassifier()
    callback = BatchThenSample(KCenter(), ratio=50, embedding_layer="body.0")
    trainer(callbacks=[callback]).fit(model, datamodule=dm)
    assert [n for n, _ in model.seen] == [50, 50, 50]
    with pytest.raises(ValueError, match="embedding_layer must be the dotted name of a module"):
        BatchThenSample(KCenter(), ratio=50, embedding_layer="")


def test_loss_el2n_and_uncertainty_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, -1.0]])
    y = torch.tensor([0, 2, 1])
    batch = ScoringBatch.from_outputs(logits, y)
    p = torch.softmax(logits, 1)
    assert torch.allclose(Loss().score(batch), -torch.log(p[torch.arange(3), y]))
    onehot = F.one_hot(y, 3).float()
    assert torch.allclose(EL2N().score(batch), (p - onehot).norm(dim=1))
    assert torch.allclose(Uncertainty("least_confidence").score(batch), 1 - p.max(1).values)
    assert torch.allclose(Uncertainty("entropy").score(batch), -(p * p.log()).sum(1))
    top = p.topk(2, 1).values
    assert torch.allclose(Uncertainty("margin").score(batch), 1 - (top[:, 0] - top[:, 1]))
    # the uniform prediction is the most uncertain by every metric
    for metric in ("least_confidence", "entropy", "margin"):
        assert int(Uncertainty(metric).score(batch).argmax()) == 1


def test_scoring_forward_finds_the_last_layer_and_reports_a_missing_one():
    model = TinyClassifier()
    x, y = torch.randn(5, DIM), torch.randint(0, CLASSES, (5,))
    scored = ScoringForward()(model, (x, y), embeddings=True)
    assert torch.allclose(scored.embeddings, model.body(x))
    assert torch.allclose(scored.logits, model(x))
    assert model.training  # the mode is restored after the eval-mode scoring pass

    class NoLinearEnd(TinyClassifier):
        def forward(self, x):
            return torch.tanh(self.head(self.body(x.float())))

    with pytest.raises(ValueError, match="last_layer='<module name>'.*body.0.*head"):
        ScoringForward()(NoLinearEnd(), (x, y), embeddings=True)
    with pytest.raises(ValueError, match="last_layer='nope'.*no such module"):
        ScoringForward(last_layer="nope")(model, (x, y), embeddings=True)
    named = ScoringForward(last_layer="head")(NoLinearEnd(), (x, y), embeddings=True)
    assert named.embeddings.shape == (5, 8)


# ---------------------------------------------------------------------- selection rules
def test_importance_weights_make_the_weighted_loss_unbiased():
    losses = torch.tensor([0.1, 0.5, 2.0, 4.0, 0.0, 1.0])
    p = losses / losses.sum()
    # exact: one draw's weighted loss has expectation sum_i p_i * l_i / (N p_i) = mean(l)
    weights = 1 / (len(losses) * p.clamp_min(1e-12))
    exact = (p * weights * losses).sum()
    assert torch.isclose(exact, losses.mean())
    # and by sampling
    g = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(4000):
        idx, w = rules.importance_sample(losses, 3, g)
        estimates.append(float((w * losses[idx]).mean()))
    assert abs(np.mean(estimates) - float(losses.mean())) < 0.01
    assert 0 not in rules.importance_sample(losses, 200, g)[0].tolist() or losses[4] == 0  # never p = 0
    assert 4 not in rules.importance_sample(losses, 200, g)[0].tolist()


def test_gradnorm_importance_estimates_the_mean_gradient():
    torch.manual_seed(1)
    layer = torch.nn.Linear(5, 3)
    h, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    batch = ScoringBatch.from_outputs(layer(h), y, embeddings=h)
    grads = batch.last_layer_gradients()
    g = torch.Generator().manual_seed(3)
    estimates = []
    for _ in range(3000):
        idx, w = GradNorm(rule="importance").select(batch, 8, g)
        estimates.append((w[:, None] * grads[idx]).mean(0))
    assert torch.allclose(torch.stack(estimates).mean(0), grads.mean(0), atol=0.01)


def test_top_k_proportional_and_balanced_rules():
    scores = torch.tensor([0.3, 0.9, 0.1, 0.8, 0.5])
    idx, w = rules.top_k(scores, 2)
    assert idx.tolist() == [1, 3] and w.tolist() == [1.0, 1.0]
    idx, w = rules.proportional_sample(scores, 5, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4]
    # water filling: a class smaller than its fair share gives all it has, the rest is shared again
    three = torch.tensor([0] * 2 + [1] * 50 + [2] * 50)
    idx, _ = rules.per_class(three, 30, lambda members, quota: rules.top_k(torch.zeros(len(members)), quota))
    assert torch.bincount(three[idx]).tolist() == [2, 14, 14]
    targets = torch.tensor([0] * 10 + [1] * 30)
    balanced = Uncertainty(balance=True)
    batch = ScoringBatch.from_outputs(torch.randn(40, 2), targets)
    idx, w = balanced.select(batch, 10, torch.Generator())
    assert torch.bincount(targets[idx]).tolist() == [5, 5]  # equal shares, not 1:3
    # weights restore the classes' share of the data: the weighted mean of the targets is their mean
    assert torch.isclose((w * targets[idx].float()).mean(), targets.float().mean())


def test_rs2_without_replacement_covers_every_sample_once_per_cycle():
    strategy, g = RS2(), torch.Generator().manual_seed(4)
    batch = ScoringBatch.unscored(10, keys=torch.arange(100, 110))
    draws = [strategy.select(batch, 3, g)[0].tolist() for _ in range(10)]  # 30 draws = 3 full cycles
    assert all(len(set(d)) == 3 for d in draws)
    flat = sum(draws, [])
    for cycle in range(3):
        assert sorted(flat[cycle * 10 : (cycle + 1) * 10]) == list(range(10))
    state = strategy.state_dict()
    again = RS2()
    again.load_state_dict(state)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert strategy.select(batch, 3, g1)[0].tolist() == again.select(batch, 3, g2)[0].tolist()
    # a different training set starts a new cycle
    other = ScoringBatch.unscored(4, keys=torch.arange(4))
    assert sorted(sum((strategy.select(other, 2, g)[0].tolist() for _ in range(2)), [])) == [0, 1, 2, 3]
    # with replacement the subsets are independent uniform draws
    assert len(set(RS2(replacement=True).select(batch, 3, g)[0].tolist())) == 3


def test_selective_backprop_prefers_large_losses_and_forgetting_counts_events():
    sb = SelectiveBackprop(beta=3.0, history=100)
    losses = torch.linspace(0.01, 3, 50)
    batch = ScoringBatch(torch.zeros(50, 2), torch.zeros(50, dtype=torch.long), losses, "cross_entropy")
    g = torch.Generator().manual_seed(0)
    picks = torch.cat([sb.select(batch, 10, g)[0] for _ in range(50)])
    assert (picks >= 25).float().mean() > 0.8
    assert torch.allclose(sb.last_scores, torch.arange(1, 51) / 50.0)

    fe = ForgettingEvents()
    keys, y = torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0])
    good = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    bad = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    for logits in (good, bad, good, bad):
        idx, _ = fe.select(ScoringBatch.from_outputs(logits, y, keys=keys), 1, g)
    assert fe.last_scores.tolist() == [2.0, 0.0, 3.0]  # key 1 forgot twice, key 3 never learned
    assert idx.tolist() == [2]
    restored = ForgettingEvents()
    restored.load_state_dict(fe.state_dict())
    assert restored.score(ScoringBatch.from_outputs(good, y, keys=keys)).tolist() == [2.0, 0.0, 3.0]


def test_coreset_strategies_pick_representatives():
    # two tight clusters per class: every coreset method picks from both clusters of a class
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    emb = torch.cat([centers[0] + 0.01 * torch.randn(12, 2, generator=g),
                     centers[1] + 0.01 * torch.randn(4, 2, generator=g)])
    y = torch.zeros(16, dtype=torch.long)
    batch = ScoringBatch.from_outputs(torch.zeros(16, 2), y, embeddings=emb)
    for strategy in (KCenter(), Craig(features="embeddings"), Submodular(features="embeddings", metric="euclidean"),
                     Submodular("log_determinant", "naive", features="embeddings")):
        idx, w = strategy.select(batch, 2, g)
        assert sorted(int(i >= 12) for i in idx.tolist()) == [0, 1], strategy
    # graph cut (lambda 1) rewards representing the data more than diversity: both from the large cluster
    idx, _ = Submodular("graph_cut", features="embeddings").select(batch, 2, g)
    assert all(i < 12 for i in idx.tolist())
    idx, w = Craig(features="embeddings").select(batch, 2, g)
    assert sorted(w.tolist()) == pytest.approx([2 * 4 / 16, 2 * 12 / 16])
    # GradMatch's weighted mean of the chosen features matches the mean feature
    idx, w = GradMatch(features="embeddings", lam=0.0).select(batch, 2, g)
    assert torch.allclose((w[:, None] * emb[idx]).mean(0), emb.mean(0), atol=0.05)


def test_coreset_partitions_large_sets_and_keeps_the_weight_convention():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(300, 3, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    batch = ScoringBatch.from_outputs(torch.zeros(300, 3), y, embeddings=emb)
    idx, w = Craig(features="embeddings", block_size=40).select(batch, 60, g)
    assert len(idx) == 60 and len(set(idx.tolist())) == 60
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-5)


def test_switching_uses_the_strategy_of_the_trigger():
    s = Switching([Uniform(), Loss(rule="top_k")], first_triggers=[0, 2])
    ctx = SelectionContext(None, None, None, trigger_id=3, seed=0, forward=ScoringForward())
    s.setup(ctx)
    assert s.needs_forward
    batch = ScoringBatch.from_outputs(torch.tensor([[0.0, 5.0], [5.0, 0.0]]), torch.tensor([0, 0]))
    assert s.select(batch, 1, torch.Generator())[0].tolist() == [0]
    s.setup(SelectionContext(None, None, None, trigger_id=1, seed=0, forward=ScoringForward()))
    assert not s.needs_forward
    with pytest.raises(ValueError, match="first_triggers must start at 0 and increase"):
        Switching([Uniform(), Loss()], [0, 0])


# ---------------------------------------------------------------------- callbacks
def test_batch_then_sample_shrinks_batches_for_an_unchanged_training_step():
    model = TinyClassifier()
    callback = BatchThenSample("loss", ratio=25)
    trainer(callbacks=[callback]).fit(model, tensor_loader(256, 64))
    assert [n for n, _ in model.seen] == [16, 16, 16, 16]
    assert callback.stats["scored_samples"] == 256 and callback.stats["kept_samples"] == 64


def test_batch_then_sample_weights_reach_a_weighted_loss(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=100, seed=0)
    dm.set_training_set(keys[:300])
    seen_weights = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen_weights.append(batch.weights.clone())

    model = TinyClassifier(weighted=True)
    trainer(callbacks=[BatchThenSample(GradNorm(rule="importance"), ratio=50), Spy()]).fit(model, datamodule=dm)
    assert [n for n, _ in model.seen] == [50, 50, 50]
    trained = [k for _, ks in model.seen for k in ks]
    assert set(trained) <= set(keys[:300].tolist())
    # importance weights 1/(N p): not all equal, and around 1 on average
    w = torch.cat(seen_weights)
    assert w.std() > 0 and 0.5 < float(w.mean()) < 2.0


def test_sample_then_batch_trains_on_a_subset_and_records_scores(store, tmp_path):
    s, keys = store
    dm = ModynDataModule(s, batch_size=50, seed=0)
    dm.set_training_set(keys[:400])
    model = TinyClassifier()
    callback = SampleThenBatch("el2n", ratio=25, period=0)
    trainer(max_epochs=2, callbacks=[callback], default_root_dir=str(tmp_path / "fit")).fit(model, datamodule=dm)
    epoch = [k for _, ks in model.seen[:2] for k in ks]
    assert len(epoch) == 100 and len(set(epoch)) == 100
    assert epoch and sorted(epoch) == sorted(k for _, ks in model.seen[2:] for k in ks)  # once per fit
    assert dm.training_subset is None  # cleared after the fit; the training set is untouched
    assert len(dm.training_set[0]) == 400
    with np.load(tmp_path / "fit" / SCORES_FILE, allow_pickle=False) as f:
        assert sorted(f["keys"].tolist()) == sorted(keys[:400].tolist())
        kept = set(epoch)
        top = set(f["keys"][np.argsort(-f["scores"], kind="stable")[:100]].tolist())
        assert kept == top  # EL2N keeps the highest scores


@pytest.mark.parametrize("make, instead", [
    (lambda: SampleThenBatch(RS2(), ratio=25, period=0), "Use period=1"),
    (lambda: BatchThenSample("rs2", ratio=25), r"Use SampleThenBatch\(period=1\)"),
])
def test_rs2_where_it_can_only_be_uniform_is_warned(make, instead):
    with pytest.warns(UserWarning, match=f"RS2 here is Uniform: .* {instead} for a fresh subset every epoch"):
        make()


def test_rs2_every_epoch_is_not_warned(recwarn):
    SampleThenBatch(RS2(), ratio=25, period=1)
    SampleThenBatch(Uniform(), ratio=25, period=0)
    assert not [w for w in recwarn if "RS2" in str(w.message)]


def test_sample_then_batch_every_epoch_with_rs2_sees_everything(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=50, seed=0)
    dm.set_training_set(keys[:200])
    model = TinyClassifier()
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        trainer(max_epochs=4, callbacks=[SampleThenBatch(RS2(), ratio=25, period=1)]).fit(model, datamodule=dm)
    dm.set_training_set(keys[:200])
    model = TinyClassifier()
    trainer(max_epochs=4, reload_dataloaders_every_n_epochs=1,
            callbacks=[SampleThenBatch(RS2(), ratio=25, period=1)]).fit(model, datamodule=dm)
    per_epoch = [sorted(model.seen[e][1] + []) for e in range(4)]
    assert all(len(b) == 50 for b in per_epoch)
    assert sorted(k for b in per_epoch for k in b) == sorted(keys[:200].tolist())  # one cycle in 4 epochs


def test_sample_then_batch_state_keeps_the_subset_on_resume(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=50, seed=0)
    dm.set_training_set(keys[:200])
    first = SampleThenBatch("loss", ratio=50, period=0)
    trainer(callbacks=[first]).fit(TinyClassifier(), datamodule=dm)
    state = first.state_dict()
    resumed = SampleThenBatch("loss", ratio=50, period=0)
    resumed.load_state_dict(state)
    model = TinyClassifier()
    dm.set_training_set(keys[:200])
    trainer(callbacks=[resumed]).fit(model, datamodule=dm)
    assert sorted(k for _, ks in model.seen for k in ks) == sorted(state["subset"]["keys"])


def test_rho_loss_trains_an_irreducible_loss_model_and_skips_the_holdout(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=50, seed=0)
    dm.set_training_set(keys[:200])
    strategy = RhoLoss(holdout=0.25, il_epochs=2)
    model = TinyClassifier()
    trainer(callbacks=[SampleThenBatch(strategy, ratio=50, period=0)]).fit(model, datamodule=dm)
    trained = {k for _, ks in model.seen for k in ks}
    holdout = set(strategy._keys[np.isinf(strategy._irreducible)].tolist())
    assert len(holdout) == 50 and not trained & holdout and len(trained) == 100
    # twin: every key has a finite irreducible loss from the model that did not see it
    twin = RhoLoss(twin=True, il_epochs=1)
    dm.set_training_set(keys[:200])
    trainer(callbacks=[SampleThenBatch(twin, ratio=50, period=0)]).fit(TinyClassifier(), datamodule=dm)
    assert np.isfinite(twin._irreducible).all() and len(twin._keys) == 200
    batch = ScoringBatch.from_outputs(torch.zeros(2, 3), torch.tensor([0, 1]), keys=torch.as_tensor(keys[:2]))
    assert torch.allclose(twin.score(batch), batch.losses - twin.irreducible_losses(batch.keys))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("ratio", [0, -5, 100.5, "25"])
def test_ratio_outside_0_100_is_refused(ratio):
    with pytest.raises(ValueError, match=r"ratio .* \(0, 100\]"):
        BatchThenSample("loss", ratio=ratio)


def test_bad_strategy_arguments_are_named():
    with pytest.raises(ValueError, match="unknown downsampling strategy 'los'"):
        BatchThenSample("los", ratio=10)
    with pytest.raises(ValueError, match="rule must be one of"):
        Loss(rule="best")
    with pytest.raises(ValueError, match="metric must be one of"):
        Uncertainty("confusion")
    with pytest.raises(ValueError, match="function must be one of"):
        Submodular("coverage")
    with pytest.raises(ValueError, match=r"period must be an integer >= 0 \(0: select once per fit\)"):
        SampleThenBatch("loss", ratio=10, period=-1)
    with pytest.raises(ValueError, match="holdout as a fraction must be in"):
        RhoLoss(holdout=1.5)
    with pytest.raises(ValueError, match="loss must be a callable or one of \\('auto', 'cross_entropy'"):
        BatchThenSample("loss", ratio=10, loss="hinge")


def test_a_model_without_a_last_linear_layer_is_told_what_to_add():
    class Squashed(TinyClassifier):
        def forward(self, x):
            return torch.sigmoid(self.head(self.body(x.float())))

    with pytest.raises(ValueError, match="last_layer="):
        trainer(callbacks=[BatchThenSample("kcenter", ratio=50)]).fit(Squashed(), tensor_loader(64, 32))


def test_balanced_selection_without_labels_is_refused():
    batch = ScoringBatch.from_outputs(torch.randn(4, 3), None)
    with pytest.raises(ValueError, match="balance=True.*needs labels"):
        Uncertainty(balance=True).select(batch, 2, torch.Generator())


def test_a_holdout_larger_than_the_data_is_refused(store):
    s, keys = store
    dm = ModynDataModule(s, batch_size=50)
    dm.set_training_set(keys[:40])
    with pytest.raises(ValueError, match="holdout of 40 samples is not smaller than the training set"):
        trainer(callbacks=[SampleThenBatch(RhoLoss(holdout=40), ratio=50, period=0)]).fit(TinyClassifier(),
                                                                                         datamodule=dm)


def test_keyed_strategies_and_sample_then_batch_need_a_modyn_datamodule():
    with pytest.raises(ValueError, match="ForgettingEvents needs store keys"):
        trainer(callbacks=[BatchThenSample("forgetting", ratio=50)]).fit(TinyClassifier(), tensor_loader(64, 32))
    dm = L.LightningDataModule.from_datasets(tensor_loader(64).dataset, batch_size=32)
    with pytest.raises(ValueError, match="SampleThenBatch selects keys through a lightning_modyn ModynDataModule"):
        trainer(callbacks=[SampleThenBatch("loss", ratio=50, period=0)]).fit(TinyClassifier(), datamodule=dm)


def test_strategy_names_cover_the_table():
    for name in ("uniform", "loss", "gradnorm", "uncertainty", "el2n", "grand", "forgetting", "selective_backprop",
                 "kcenter", "craig", "gradmatch", "submodular", "rho_loss", "rs2"):
        assert type(strategy_by_name(name)).__name__


# ---------------------------------------------------------------------- reusing recorded scores
def test_recorded_scores_replay_the_latest_hardest_old_samples(tmp_path):
    from lightning_modyn.selection import RecordedScores, TriggerHistory
    from lightning_modyn.selection.recorded_scores import latest_scores

    def record(trigger, keys, scores, epoch=0):
        np.savez(tmp_path / f"scores-trigger-{trigger:04d}.npz", keys=np.array(keys), scores=np.array(scores),
                 epochs=np.full(len(keys), epoch), trigger_id=np.int64(trigger))

    record(0, [0, 1, 2, 3], [0.9, 0.1, 0.8, 0.2])
    record(1, [0, 4, 5], [0.0, 0.7, 0.3])  # key 0 was rescored later: its latest score is 0.0
    keys, scores = latest_scores(str(tmp_path))
    assert dict(zip(keys.tolist(), scores.tolist())) == pytest.approx(
        {0: 0.0, 1: 0.1, 2: 0.8, 3: 0.2, 4: 0.7, 5: 0.3})
    h = TriggerHistory([np.arange(0, 4), np.arange(4, 6), np.arange(6, 9)])
    picked, weights = RecordedScores(str(tmp_path), ratio=50).select(h, None)
    assert picked.tolist() == [2, 4, 5, 6, 7, 8] and weights.tolist() == [1.0] * 6  # top 3 of 6 old + all new
    assert RecordedScores(str(tmp_path), ratio=50, tail_triggers=1).select(h, None)[0].tolist() == [4, 6, 7, 8]
    # records of the trigger being trained (or later) are not used: at trigger 1 only trigger 0's scores count
    assert RecordedScores(str(tmp_path), ratio=25).select(TriggerHistory(h.intervals[:2]), None)[0].tolist() == [
        0, 4, 5]
    with pytest.raises(ValueError, match=r"ratio .* \(0, 100\]"):
        RecordedScores(str(tmp_path), ratio=0)
    np.savez(tmp_path / "scores-trigger-0002.npz", keys=np.arange(3))
    with pytest.raises(ValueError, match="scores-trigger-0002.npz is not a score record: it lacks"):
        latest_scores(str(tmp_path))


def test_recorded_scores_drop_deleted_keys_old_and_new(tmp_path):
    from lightning_modyn.selection import RecordedScores, TriggerHistory

    np.savez(tmp_path / "scores-trigger-0000.npz", keys=np.arange(4), scores=np.array([0.9, 0.8, 0.1, 0.2]),
             epochs=np.zeros(4, np.int64), trigger_id=np.int64(0))

    class Store:  # keys 0 (old) and 5 (new) were deleted since they arrived
        def contains(self, keys):
            return ~np.isin(keys, [0, 5])

    h = TriggerHistory([np.arange(4), np.arange(4, 7)])
    assert RecordedScores(str(tmp_path), ratio=50).select(h, Store())[0].tolist() == [1, 3, 4, 6]
    with pytest.raises(ValueError, match="tail_triggers must be None"):
        RecordedScores(str(tmp_path), tail_triggers=1.5)


# ---------------------------------------------------------------------- weights a training step must not miss
def fits_warned(callback, model, data, fits: int = 1, **kwargs) -> list[str]:
    """Run ``fits`` fits; the texts of the warnings about ignored selection weights."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(fits):
            if isinstance(data, ModynDataModule):
                trainer(callbacks=[callback], **kwargs).fit(model, datamodule=data)
            else:
                trainer(callbacks=[callback], **kwargs).fit(model, data)
    return [str(w.message) for w in caught if "ignored the selection weights" in str(w.message)]


@pytest.mark.parametrize("weighted, rule, ignored", [(False, "importance", True), (True, "importance", False),
                                                     (False, "top_k", False)])
def test_a_step_that_ignores_weights_that_matter_is_warned_once_per_fit(store, weighted, rule, ignored):
    s, keys = store
    dm = ModynDataModule(s, batch_size=100, seed=0)
    dm.set_training_set(keys[:300])
    callback = BatchThenSample(Loss(rule=rule), ratio=50)
    said = fits_warned(callback, TinyClassifier(weighted=weighted), dm, fits=2, max_epochs=2)
    assert len(said) == (2 if ignored else 0)  # once in each of the two fits
    assert callback.stats["steps_ignoring_weights"] == (12 if ignored else 0)  # 3 batches x 2 epochs x 2 fits
    if ignored:
        assert said[0].startswith("BatchThenSample: the training step ignored the selection weights of "
                                  "Loss(rule='importance') (they differ between samples: importance weights")
        assert "loss = weighted_mean(F.cross_entropy(logits, y, reduction='none'), batch)" in said[0]
        assert said[0].endswith("use a strategy whose weights are all 1 (Uniform(), or rule='proportional', "
                                 "Loss's and GradNorm's default)")


@pytest.mark.parametrize("weighted", [False, True])
def test_ignored_weights_are_seen_on_plain_dataloader_batches_and_sample_then_batch(store, weighted):
    said = fits_warned(BatchThenSample(GradNorm(rule="importance"), ratio=50), TinyClassifier(weighted=weighted),
                       tensor_loader(256, 64))
    assert len(said) == (0 if weighted else 1)
    s, keys = store
    dm = ModynDataModule(s, batch_size=50, seed=0)
    dm.set_training_set(keys[:200])
    callback = SampleThenBatch(Loss(rule="importance"), ratio=50, period=0)
    said = fits_warned(callback, TinyClassifier(weighted=weighted), dm)
    assert len(said) == (0 if weighted else 1)
    assert all(text.startswith("SampleThenBatch: the training step ignored") for text in said)


def test_weights_reach_a_training_step_that_ddp_hands_a_plain_tuple(store):
    """DistributedDataParallel with device_ids moves its inputs with torch.distributed.utils._recursive_to, which
    rebuilds a tuple subclass as a plain tuple of the same tensors: the weights must still be found."""
    from torch.distributed.utils import _recursive_to

    s, keys = store
    dm = ModynDataModule(s, batch_size=100, seed=0)
    dm.set_training_set(keys[:300])
    seen = []

    class AsUnderDDP(TinyClassifier):
        def training_step(self, batch, batch_idx):
            plain = _recursive_to((batch,), torch.device("cpu"), False)[0][0]  # what DDP would pass on
            assert type(plain) is tuple and plain[0] is batch[0]
            x, y = plain
            losses = F.cross_entropy(self(x), y, reduction="none")
            weights = selection_weights(plain)
            seen.append((weights.clone(), batch.weights.clone()))
            return weighted_mean(losses, plain)

    said = fits_warned(BatchThenSample(GradNorm(rule="importance"), ratio=50), AsUnderDDP(), dm)
    assert said == [] and len(seen) == 3  # the weights were read through the plain tuple: no warning
    assert all(torch.equal(a, b) and b.std() > 0 for a, b in seen)
    assert selection_weights((torch.zeros(2), torch.zeros(2))) is None  # a tuple of other tensors has none
