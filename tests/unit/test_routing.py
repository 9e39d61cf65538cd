"""The local router's decisions and calibration, on synthetic embeddings (clusters on the unit
sphere), so that what is asserted follows from the geometry, not from a model's mood."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ai.routing import Handler, LocalRouter, wilson_lower

DIM = 24


def _cluster(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    points = centre + spread * rng.standard_normal((n, DIM)) / np.sqrt(DIM)  # spread: the noise's norm
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


@pytest.fixture()
def world() -> dict[str, object]:
    rng = np.random.default_rng(7)
    centres = {"knowledge": _unit(rng), "chitchat": _unit(rng), "out_of_scope": _unit(rng)}

    def sample(n: int, spread: float = 0.25) -> tuple[np.ndarray, list[str]]:
        vectors, labels = [], []
        for label, centre in centres.items():
            vectors.append(_cluster(rng, centre, n, spread))
            labels += [label] * n
        return np.vstack(vectors), labels

    return {"rng": rng, "centres": centres, "sample": sample}


def test_wilson_lower_bound_is_below_the_share_and_tightens_with_more_examples() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(80, 100) < 0.8 < wilson_lower(800, 1000) + 0.03
    assert wilson_lower(80, 100) < wilson_lower(800, 1000) < 0.8
    assert wilson_lower(10, 10) < 1.0 and wilson_lower(100, 100) > wilson_lower(10, 10)


def test_a_message_far_from_every_in_scope_example_is_out_of_scope(world: dict) -> None:
    vectors, labels = world["sample"](60)
    router = LocalRouter(low=0.0, high=0.6).fit(vectors, labels)
    near = world["centres"]["knowledge"]
    assert router.decide(near).handler is Handler.KNOWLEDGE
    # a direction no example points to, on the knowledge side of the classifier's boundary
    rng = world["rng"]
    stranger = _unit(rng)
    for centre in world["centres"].values():
        stranger -= (stranger @ centre) * centre
    stranger = 0.45 * near + stranger / np.linalg.norm(stranger)
    stranger /= np.linalg.norm(stranger)
    confidence, _ = router._best_in_scope(np.atleast_2d(stranger))
    assert confidence[0] > 0.5  # the probabilities alone would call it knowledge
    decision = router.decide(stranger)
    assert decision.handler is Handler.OUT_OF_SCOPE and decision.confident
    # without the distance term the same message would be taken as knowledge
    plain = LocalRouter(low=0.0, high=0.6, novelty_weight=0.0).fit(vectors, labels)
    assert plain.decide(stranger).handler is Handler.KNOWLEDGE


def _scattered_world(seed: int = 7) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Two in-scope clusters; out-of-scope messages from anywhere, some close to them (as real
    ones are), with few of them in training."""
    rng = np.random.default_rng(seed)
    centres = {"knowledge": _unit(rng), "chitchat": _unit(rng)}

    def sample(n: int, n_oos: int) -> tuple[np.ndarray, list[str]]:
        vectors, labels = [], []
        for label, centre in centres.items():
            vectors.append(_cluster(rng, centre, n, 0.5))
            labels += [label] * n
        pull = rng.uniform(0.0, 1.2, n_oos)[:, None]
        towards = np.array([centres["knowledge"] if i % 2 else centres["chitchat"] for i in range(n_oos)])
        oos = pull * towards + rng.standard_normal((n_oos, DIM)) / np.sqrt(DIM)
        vectors.append(oos / np.linalg.norm(oos, axis=1, keepdims=True))
        return np.vstack(vectors), labels + ["out_of_scope"] * n_oos

    return (*sample(80, 20), *sample(150, 150))


def test_calibration_meets_the_out_of_scope_recall_when_it_can() -> None:
    train, train_labels, held, held_labels = _scattered_world()
    most_coverage = LocalRouter().fit(train, train_labels).calibrate(held, held_labels, target_precision=0.9,
                                                                     out_of_scope_recall=None)
    assert most_coverage.out_of_scope_recall is not None and most_coverage.out_of_scope_recall < 0.9
    router = LocalRouter().fit(train, train_labels)
    with_recall = router.calibrate(held, held_labels, target_precision=0.9, out_of_scope_recall=0.9)
    assert with_recall.out_of_scope_recall is not None and with_recall.out_of_scope_recall >= 0.9
    assert with_recall.precision >= 0.9 and with_recall.low > most_coverage.low
    decisions = router.decide_many(held)
    caught = sum(d.handler is Handler.OUT_OF_SCOPE and d.confident
                 for d, label in zip(decisions, held_labels) if label == "out_of_scope")
    assert caught / held_labels.count("out_of_scope") >= 0.9
    # an unreachable recall target is dropped, not allowed to stop local decisions altogether
    unreachable = LocalRouter().fit(train, train_labels).calibrate(held, held_labels, target_precision=0.9,
                                                                    out_of_scope_recall=1.01)
    assert unreachable == most_coverage


def test_calibration_without_out_of_scope_examples_ignores_the_recall_target(world: dict) -> None:
    train, train_labels = world["sample"](60)
    held, held_labels = world["sample"](60)
    keep = [i for i, label in enumerate(held_labels) if label != "out_of_scope"]
    router = LocalRouter().fit(train, train_labels)
    calibration = router.calibrate(held[keep], [held_labels[i] for i in keep], target_precision=0.95)
    assert calibration.out_of_scope_recall is None and calibration.coverage > 0.5
