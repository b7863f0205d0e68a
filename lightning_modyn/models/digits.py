"""A small convolutional classifier for the rotating-digits stream."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modyn.selection.downsampling.weights import weighted_mean


class DigitsConvNet(L.LightningModule):
    """Two conv blocks and a linear head; ``embed`` exposes the penultimate features for drift triggers.

    Args:
        num_classes: Output classes.
        channels: Channels of the conv blocks.
        lr: Adam learning rate.
        use_weights: Apply the selection weights a batch carries (``weighted_mean``); False trains as a module
            that ignores them would (a selection callback then warns).

    >>> net = DigitsConvNet(num_classes=10)
    >>> net(torch.zeros(2, 1, 16, 16)).shape, net.embed(torch.zeros(2, 1, 16, 16)).shape
    (torch.Size([2, 10]), torch.Size([2, 128]))
    """

    def __init__(self, num_classes: int = 10, channels: int = 16, lr: float = 1e-3,
                 use_weights: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * channels, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        losses = F.cross_entropy(self(x), y, reduction="none")
        loss = weighted_mean(losses, batch) if self.hparams.use_weights else losses.mean()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
