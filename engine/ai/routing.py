"""Intent routing, cheapest first: a local classifier (logistic regression over the offline
embeddings, no model call) decides when it is confident; below a calibrated threshold the message
goes to a cheap model (``engine.ai.pipeline``), never straight to the expensive one.

The threshold is calibrated on held-out examples for a target precision of the local decisions
(95 % by default): the classifier answers alone only where it is right at least that often.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

EXAMPLES = Path(__file__).resolve().parent / "data" / "routing_examples.jsonl"


class Handler(StrEnum):
    KNOWLEDGE = "knowledge"          # answer from the knowledge base (RAG)
    CHITCHAT = "chitchat"            # greetings, thanks, small talk: a short reply, no retrieval
    CLARIFICATION = "clarification"  # too vague to answer: ask a follow-up question
    HANDOFF = "handoff"              # wants a person, complains, or the AI failed twice
    OUT_OF_SCOPE = "out_of_scope"    # not the business's matter: a polite decline


@dataclass(frozen=True, slots=True)
class LocalDecision:
    label: str          # the classifier's class (a handler, or a finer intent mapped to one)
    handler: Handler
    confidence: float   # the class probability summed over the handler's classes
    confident: bool     # at or above the calibrated threshold: no model call needed


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    coverage: float     # share of the calibration set decided locally
    precision: float    # handler precision of those decisions


class LocalRouter:
    """Logistic regression over L2-normalised sentence embeddings. Classes may be handlers or
    finer intents with a ``handler_of`` mapping (finer classes give sharper probabilities)."""

    def __init__(self, *, threshold: float = 0.9, c: float = 10.0) -> None:
        self.threshold = threshold
        self._model = LogisticRegression(C=c, max_iter=2000)
        self._handler_of: dict[str, Handler] = {}
        self._class_handlers: np.ndarray | None = None

    def fit(self, vectors: np.ndarray, labels: Sequence[str], handler_of: dict[str, str] | None = None) -> LocalRouter:
        if len(vectors) != len(labels) or not len(labels):
            raise ValueError("one label per vector, and at least one of each")
        if len(set(labels)) < 2:
            raise ValueError("a router needs at least two classes")
        self._model.fit(np.asarray(vectors, dtype=np.float32), list(labels))
        mapping = handler_of or {label: label for label in set(labels)}
        self._handler_of = {label: Handler(mapping[label]) for label in self._model.classes_}
        self._class_handlers = np.array([self._handler_of[c].value for c in self._model.classes_])
        return self

    def _handler_probabilities(self, vectors: np.ndarray) -> tuple[np.ndarray, list[Handler], np.ndarray]:
        assert self._class_handlers is not None, "fit the router first"
        probs = self._model.predict_proba(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        handlers = sorted(set(self._handler_of.values()))
        by_handler = np.stack([probs[:, self._class_handlers == h.value].sum(axis=1) for h in handlers], axis=1)
        return by_handler, handlers, probs

    def decide_many(self, vectors: np.ndarray) -> list[LocalDecision]:
        by_handler, handlers, probs = self._handler_probabilities(vectors)
        best = by_handler.argmax(axis=1)
        top_class = probs.argmax(axis=1)
        out = []
        for row, h in enumerate(best):
            confidence = float(by_handler[row, h])
            out.append(LocalDecision(str(self._model.classes_[top_class[row]]), handlers[h], confidence,
                                     confidence >= self.threshold))
        return out

    def decide(self, vector: np.ndarray) -> LocalDecision:
        return self.decide_many(np.atleast_2d(vector))[0]

    def calibrate(self, vectors: np.ndarray, handlers: Sequence[str], *, target_precision: float = 0.95) -> Calibration:
        """The lowest threshold whose local decisions on this held-out set are at least
        ``target_precision`` right; sets it on the router."""
        decisions = self.decide_many(vectors)
        confidence = np.array([d.confidence for d in decisions])
        correct = np.array([d.handler.value == h for d, h in zip(decisions, handlers)])
        order = np.argsort(-confidence, kind="stable")
        precision_at = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
        ok = np.nonzero(precision_at >= target_precision)[0]
        if not len(ok):
            self.threshold = 1.01  # never confident: everything goes to the model
            return Calibration(self.threshold, 0.0, 0.0)
        # the largest prefix of confident decisions that keeps the precision
        cut = ok.max()
        self.threshold = float(confidence[order[cut]])
        accepted = confidence >= self.threshold
        return Calibration(self.threshold, float(accepted.mean()), float(correct[accepted].mean()))


def shipped_examples(path: Path = EXAMPLES) -> list[tuple[str, Handler]]:
    """The labelled examples that ship with Parlo (Italian and English), one JSON object per line."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["text"], Handler(row["handler"])))
    return out
