"""Class accuracy of images under a small classifier trained on real images.

How well a class-conditional generator hits its class: train a small CNN on the real labelled
training images, then compare its accuracy on real test images, on the tokenizer's reconstructions
of them (what the tokens can carry at best) and on generated images labelled with the class they
were asked for. The gap between the first two is the tokenizer's; between the last two, the
generator's. This is the CPU-sized cousin of the "classification accuracy score" of Ravuri and
Vinyals (2019) and of Inception-based metrics, with no pretrained weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.errors import VistokError


class SmallConvClassifier(nn.Module):
    """``(b 1 h w)`` grey images in [-1, 1] -> ``(b classes)`` logits.

    Three conv blocks (32, 64, 128 channels, batch norm, ReLU, 2x2 max pooling), global average
    pooling, dropout, a linear layer; 94 k parameters. 88.4 % on the Fashion-MNIST test set after
    three epochs (85 s on 2 CPU cores). Any ``h, w >= 8`` works (global pooling).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        if num_classes < 2:
            raise VistokError(f"num_classes must be >= 2; got {num_classes}")
        chans = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(chans[-1], num_classes)
        self.num_classes = num_classes

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise VistokError(f"expected images of shape (b, c, h, w); got {tuple(images.shape)}")
        x = self.features(images).mean(dim=(2, 3))
        return self.head(self.dropout(x))


def _check(images: Tensor, labels: Tensor | None = None) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise VistokError(f"expected float images of shape (n, c, h, w) in [-1, 1]; got {images.dtype} {tuple(images.shape)}")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
        raise VistokError(f"expected one label per image; got {tuple(labels.shape)} labels for {len(images)} images")


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    augment: bool = True,
    progress: Callable[[int, int, float], None] | None = None,
) -> SmallConvClassifier:
    """Train :class:`SmallConvClassifier` on ``images (n c h w)`` in [-1, 1] with ``labels (n,)``.

    AdamW with a cosine decay over ``epochs``; ``augment`` adds random horizontal flips and
    one-pixel shifts. ``progress(step, total, loss)`` is called every step. Deterministic for a seed.
    """
    _check(images, labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise VistokError(f"labels must lie in [0, {num_classes}); got [{int(labels.min())}, {int(labels.max())}]")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallConvClassifier(num_classes, in_channels=images.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = len(images)
    per_epoch = math.ceil(n / batch_size)
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x, y = images[idx], labels[idx]
            if augment:
                x = _augment(x, g)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, total, float(loss))
    return model.eval()


def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random horizontal flip and a shift of up to one pixel (padding with the corner value)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    if dy or dx:
        pad = F.pad(x, (1, 1, 1, 1), mode="replicate")
        h, w = x.shape[-2:]
        x = pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return x


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, *, batch_size: int = 512) -> Tensor:
    """``(n c h w)`` -> predicted classes ``(n,)``."""
    _check(images)
    model.eval()
    return torch.cat([model(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` classified as their ``labels``."""
    _check(images, labels)
    if len(images) == 0:
        raise VistokError("accuracy of an empty set is undefined")
    return float((predict(model, images) == labels).double().mean())


def per_class_accuracy(model: nn.Module, images: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Accuracy per class (NaN for a class with no image)."""
    _check(images, labels)
    pred = predict(model, images)
    out = []
    for c in range(num_classes):
        m = labels == c
        out.append(float((pred[m] == c).double().mean()) if m.any() else float("nan"))
    return out
