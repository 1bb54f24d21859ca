"""Recognition from tokens (MAGVIT-v2's "understanding"): a transformer classifier reading pixels or
a tokenizer's tokens, masked pretraining with token or pixel targets, the trainer, and prediction
with accuracy and confusion matrices. See docs/recognition.md."""

from vistok.recognize.config import ClassifierTrainConfig, RecognizerConfig, load_classifier_config
from vistok.recognize.model import Recognizer, load_recognizer

__all__ = ["ClassifierTrainConfig", "Recognizer", "RecognizerConfig", "load_classifier_config", "load_recognizer"]
