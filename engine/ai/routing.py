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
    low: float          # below this best in-scope probability a message is out of scope
    high: float         # at or above it the best in-scope handler is taken
    coverage: float     # share of the calibration set decided locally
    precision: float    # handler precision of those decisions
    out_of_scope_recall: float | None = None  # out-of-scope examples caught locally (Wilson lower bound)


class LocalRouter:
    """Logistic regression over L2-normalised sentence embeddings. Classes may be handlers or
    finer intents with a ``handler_of`` mapping (finer classes give sharper probabilities).

    Two calibrated thresholds decide locally: at or above a high one of the best *in-scope* class
    probability, that class's handler is taken; below a low one of the *fit* score nothing the
    business handles fits (out of scope). The fit score is that probability lowered by how far the
    message is from its nearest in-scope training example (``novelty_weight`` × (1 − cosine)):
    together they catch out-of-scope messages better than either alone (CLINC150 validation: a
    fifth fewer in-scope messages declined at the same out-of-scope recall; the weight, 4, was
    chosen there). In between, the message goes to the cheap model."""

    def __init__(self, *, low: float = 0.0, high: float = 0.6, c: float = 10.0, novelty_weight: float = 4.0) -> None:
        from sklearn.linear_model import LogisticRegression  # scikit-learn loads only where a router is trained

        self.low = low
        self.high = high
        self._model = LogisticRegression(C=c, max_iter=3000)
        self._handler_of: dict[str, Handler] = {}
        self._in_scope: np.ndarray | None = None
        self.novelty_weight = novelty_weight
        self._known: np.ndarray | None = None  # in-scope training vectors, for the nearest-example distance

    def fit(self, vectors: np.ndarray, labels: Sequence[str], handler_of: dict[str, str] | None = None) -> LocalRouter:
        if len(vectors) != len(labels) or not len(labels):
            raise ValueError("one label per vector, and at least one of each")
        if len(set(labels)) < 2:
            raise ValueError("a router needs at least two classes")
        self._model.fit(np.asarray(vectors, dtype=np.float32), list(labels))
        mapping = handler_of or {label: label for label in set(labels)}
        self._handler_of = {label: Handler(mapping[label]) for label in self._model.classes_}
        self._in_scope = np.array([self._handler_of[c] is not Handler.OUT_OF_SCOPE for c in self._model.classes_])
        known = [self._handler_of[label] is not Handler.OUT_OF_SCOPE for label in labels]
        self._known = np.asarray(vectors, dtype=np.float32)[np.array(known)]
        return self

    def class_probabilities(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classes, probabilities per class) for finer-grained evaluation."""
        return self._model.classes_, self._model.predict_proba(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))

    def _best_in_scope(self, vectors: np.ndarray) -> tuple[np.ndarray, list[str]]:
        assert self._in_scope is not None, "fit the router first"
        _, probs = self.class_probabilities(vectors)
        scoped = np.where(self._in_scope, probs, -1.0)
        best = scoped.argmax(axis=1)
        return scoped[np.arange(len(best)), best], [str(self._model.classes_[i]) for i in best]

    def fit_score(self, vectors: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """The best in-scope probability lowered by the distance to the nearest in-scope example."""
        if self._known is None or not len(self._known) or not self.novelty_weight:
            return confidence
        nearest = (np.atleast_2d(np.asarray(vectors, dtype=np.float32)) @ self._known.T).max(axis=1)
        return confidence - self.novelty_weight * (1.0 - nearest)

    def decide_many(self, vectors: np.ndarray) -> list[LocalDecision]:
        confidence, labels = self._best_in_scope(vectors)
        fit = self.fit_score(vectors, confidence)
        out = []
        for p, f, label in zip(confidence, fit, labels):
            if f < self.low:
                out.append(LocalDecision("out_of_scope", Handler.OUT_OF_SCOPE, float(1 - p), True))
            else:
                out.append(LocalDecision(label, self._handler_of[label], float(p), p >= self.high))
        return out

    def decide(self, vector: np.ndarray) -> LocalDecision:
        return self.decide_many(np.atleast_2d(vector))[0]

    def calibrate(self, vectors: np.ndarray, handlers: Sequence[str], *, target_precision: float = 0.95,
                  out_of_scope_share: float | None = 0.5, out_of_scope_recall: float | None = 0.8) -> Calibration:
        """The pair of thresholds that decides the most messages locally while keeping the
        handler precision of those decisions at or above ``target_precision`` on this held-out
        set with 95 % confidence, and catching at least ``out_of_scope_recall`` of its out-of-scope examples locally
        with 95 % confidence (dropped when no pair reaches both, or the set has none); sets them
        on the router.

        Why an out-of-scope target: the pair with the most coverage lets a quarter of out-of-scope
        messages through to the cheap model or, worse, to a handler; a decline that needs no model
        is what those customers should get, at the price of a few in-scope messages declined.

        Held-out sets rarely have the out-of-scope share real traffic has (CLINC150's validation
        split has 3 %, its test split 18 %), and precision depends on it: out-of-scope examples are
        weighted to ``out_of_scope_share`` of the total (0.5 by default: a pessimistic prior, not
        one read off any test set). ``None`` keeps the set's own mix."""
        confidence, labels = self._best_in_scope(vectors)
        fit = self.fit_score(vectors, confidence)
        predicted = np.array([self._handler_of[label].value for label in labels])
        truth = np.array(list(handlers))
        is_oos = truth == Handler.OUT_OF_SCOPE.value
        weight = np.ones(len(truth))
        if out_of_scope_share is not None and is_oos.any() and (~is_oos).any():
            weight[is_oos] = out_of_scope_share / (1 - out_of_scope_share) * (~is_oos).sum() / is_oos.sum()
        best: Calibration | None = None
        best_with_recall: Calibration | None = None
        for low in np.arange(-0.5, 0.51, 0.02):
            oos = fit < low
            # the recall that the held-out set shows with 95 % confidence (Wilson's lower bound):
            # a set of a hundred out-of-scope examples gives its raw share give or take 0.08
            recall = wilson_lower(int(oos[is_oos].sum()), int(is_oos.sum())) if is_oos.any() else None
            for high in np.arange(0.2, 1.0, 0.02):
                taken = confidence >= high
                local = oos | taken
                if not local.any():
                    continue
                right = np.where(oos, is_oos, predicted == truth)
                precision = float((right * weight)[local].sum() / weight[local].sum())
                coverage = float(local.mean())
                # as for the recall: the precision the set shows with 95 % confidence must reach the target
                if wilson_lower(round(precision * int(local.sum())), int(local.sum())) < target_precision:
                    continue
                found = Calibration(float(low), float(high), coverage, precision, recall)
                if best is None or coverage > best.coverage:
                    best = found
                if (out_of_scope_recall is not None and recall is not None and recall >= out_of_scope_recall
                        and (best_with_recall is None or coverage > best_with_recall.coverage)):
                    best_with_recall = found
        best = best_with_recall or best
        if best is None:  # never confident: everything goes to the model
            best = Calibration(0.0, 1.01, 0.0, 0.0)
        self.low, self.high = best.low, best.high
        return best


def wilson_lower(successes: int, n: int, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval for a proportion (95 % for z = 1.96)."""
    if n <= 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def shipped_examples(path: Path = EXAMPLES) -> list[tuple[str, Handler]]:
    """The labelled examples that ship with Parlo (Italian and English), one JSON object per line."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["text"], Handler(row["handler"])))
    return out
