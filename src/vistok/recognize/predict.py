"""Classify media with a trained recognition model: predictions, accuracy, per-class accuracy and
the confusion matrix (the work behind ``vistok classify``).

DATA may be one file, a folder of files (unlabelled: predictions only), a class-folder tree or an
IDX folder (its ``test`` split): labelled, so the accuracy and the confusion matrix are computed,
with the tree's class folders matched to the model's classes by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vistok.atomic import atomic_output, atomic_write_text
from vistok.data.datasets import make_clip, media_files
from vistok.data.idx import is_idx_folder
from vistok.data.images import IMAGE_EXTENSIONS, probe_image
from vistok.data.video import VIDEO_EXTENSIONS, probe_video
from vistok.errors import VistokError
from vistok.recognize.data import RecognitionSet, check_classes, encode_tokens, load_recognition_set, to_uint8
from vistok.recognize.model import Recognizer
from vistok.tokenizers.base import Tokenizer


@dataclass
class Predictions:
    """``pred`` and ``confidence`` (softmax probability of the predicted class) per item; with
    ``labels`` the true classes (indices into the model's ``class_names``)."""

    paths: list[str]
    pred: np.ndarray
    confidence: np.ndarray
    class_names: list[str]
    labels: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        if self.labels is None:
            raise VistokError("these predictions have no true labels")
        return float((self.pred == self.labels).mean())

    def confusion(self) -> np.ndarray:
        """``(k, k)`` counts: row = true class, column = predicted class."""
        k = len(self.class_names)
        m = np.zeros((k, k), dtype=np.int64)
        np.add.at(m, (self.labels, self.pred), 1)
        return m

    def per_class_accuracy(self) -> dict[str, float | None]:
        m = self.confusion()
        totals = m.sum(1)
        return {n: (float(m[i, i] / totals[i]) if totals[i] else None) for i, n in enumerate(self.class_names)}

    def report(self) -> dict:
        return {"items": len(self.paths), "accuracy": self.accuracy, "correct": int((self.pred == self.labels).sum()),
                "class_names": self.class_names, "per_class_accuracy": self.per_class_accuracy(),
                "confusion": self.confusion().tolist(), "confusion_layout": "rows: true class, columns: predicted class"}


def needs_tokenizer(model: Recognizer) -> bool:
    return model.config.inputs == "tokens"


def check_tokenizer(model: Recognizer, tokenizer: Tokenizer | None, where: str) -> None:
    """Refuse a missing tokenizer or one other than the model was trained on."""
    if not needs_tokenizer(model):
        return
    if tokenizer is None:
        raise VistokError(f"{where} reads tokens: pass --tokenizer (the one it was trained with)")
    tid = tokenizer.model_id()
    if tid != model.config.tokenizer_id:
        raise VistokError(f"the tokenizer (id {tid[:12]}) does not match the run's (id {str(model.config.tokenizer_id)[:12]}): "
                          "pass the tokenizer the classifier was trained with")


@torch.no_grad()
def predict_set(model: Recognizer, data: RecognitionSet, *, batch_size: int = 256,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(pred (n,), confidence (n,))`` over a loaded set."""
    model.eval()
    device = next(model.parameters()).device
    preds, confs = [], []
    for start in range(0, len(data), batch_size):
        items = torch.arange(start, min(start + batch_size, len(data)))
        x = data.tokens[items] if model.config.inputs == "tokens" else data.video(items)
        probs = model(x.to(device)).float().softmax(-1)
        conf, pred = probs.max(-1)
        preds.append(pred.cpu().numpy())
        confs.append(conf.cpu().numpy())
        if progress is not None:
            progress(int(items[-1]) + 1, len(data))
    return np.concatenate(preds), np.concatenate(confs)


def _check_geometry(model: Recognizer, data: RecognitionSet) -> None:
    c = model.config
    if (data.frames, data.size) != (c.frames, c.size):
        raise VistokError(f"the data was read at {data.frames} frame(s) of {data.size} px, the model at {c.frames} of {c.size}")


def _unlabelled_set(files: list[Path], model: Recognizer, tokenizer: Tokenizer | None) -> tuple[RecognitionSet, list]:
    c = model.config
    pixels, paths, skipped = [], [], []
    for f in files:
        try:
            suffix = f.suffix.lower()
            if suffix in IMAGE_EXTENSIONS:
                probe_image(f)
                if c.frames != 1:
                    raise VistokError(f"an image, but the model reads clips of {c.frames} frames")
                kind, total = "image", 1
            elif suffix in VIDEO_EXTENSIONS:
                kind, total = "video", probe_video(f).frames
                if total < c.frames:
                    raise VistokError(f"too short: {total} frame(s), {c.frames} needed")
            else:
                raise VistokError("not a video or image file")
            video, _ = make_clip(str(f), kind, total_frames=total, frames=c.frames, stride=1, size=c.size, random=False)
        except (VistokError, OSError) as e:
            skipped.append((str(f), str(e)))
            continue
        pixels.append(to_uint8(video))
        paths.append(str(f))
    if not pixels:
        detail = f": {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise VistokError(f"nothing to classify{detail}")
    px = torch.stack(pixels)
    tokens = encode_tokens(tokenizer, px) if tokenizer is not None and needs_tokenizer(model) else None
    labels = torch.full((len(px),), -1, dtype=torch.int64)
    return RecognitionSet(px, labels, tokens, model.config.class_names, paths), skipped


def classify(model: Recognizer, data: str | Path, *, tokenizer: Tokenizer | None = None, batch_size: int = 256,
             cache_dir: str | Path | None = "", progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Predict every item of ``data`` (see the module doc)."""
    check_tokenizer(model, tokenizer, "this classifier")
    c = model.config
    root = Path(data)
    if not root.exists():
        raise VistokError(f"{root} does not exist")
    tok = tokenizer if needs_tokenizer(model) else None
    labelled = root.is_dir() and (is_idx_folder(root) or any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()))
    if labelled:
        split = "test" if is_idx_folder(root) else "train"
        ds = load_recognition_set(root, size=c.size, frames=c.frames, split=split, tokenizer=tok, cache_dir=cache_dir,
                                  require_classes=False)
        unknown = [n for n in ds.class_names if n not in c.class_names]
        if unknown:
            raise VistokError(f"{root} has class folder(s) the model does not know: {', '.join(map(repr, unknown[:5]))} "
                              f"(its classes: {', '.join(c.class_names)})")
        if not is_idx_folder(root):
            check_classes(ds.class_names, ds.labels, root, min_classes=1)
        remap = torch.tensor([c.class_names.index(n) for n in ds.class_names])
        labels = remap[ds.labels].numpy()
        skipped: list = []
    else:
        files = [root] if root.is_file() else media_files(root)
        if not files:
            raise VistokError(f"{root} holds no media files")
        ds, skipped = _unlabelled_set(files, model, tok)
        labels = None
    _check_geometry(model, ds)
    pred, conf = predict_set(model, ds, batch_size=batch_size, progress=progress)
    return Predictions(ds.paths, pred, conf, list(c.class_names), labels, skipped)


def write_predictions_csv(path: str | Path, p: Predictions) -> Path:
    """``path,label,confidence[,true]`` per item, written atomically."""
    head = "path,label,confidence" + (",true" if p.labels is not None else "")
    lines = [head]
    for i, f in enumerate(p.paths):
        row = [_csv(f), _csv(p.class_names[p.pred[i]]), f"{p.confidence[i]:.4f}"]
        if p.labels is not None:
            row.append(_csv(p.class_names[p.labels[i]]))
        lines.append(",".join(row))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s


def write_report(folder: str | Path, p: Predictions, *, title: str = "") -> list[Path]:
    """``confusion.json`` (accuracy, per-class accuracy, the matrix) and ``confusion.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rep = p.report()
    j = folder / "confusion.json"
    atomic_write_text(j, json.dumps(rep, indent=2) + "\n")
    return [j, save_confusion_png(folder / "confusion.png", p.confusion(), p.class_names,
                                  title=f"{title}accuracy {rep['accuracy']:.1%} ({rep['correct']}/{rep['items']})")]


def save_confusion_png(path: Path, matrix: np.ndarray, names: list[str], *, title: str = "") -> Path:
    """The confusion matrix as a picture: rows normalized to the share of each true class, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = max(4.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
