"""The public intent sets in ../shared/data, read in place: CLINC150 (with out-of-scope queries)
and Banking77. CLINC150's intents map to Parlo's handlers: its `small_talk` domain → chitchat,
`oos` → out_of_scope, every other intent → knowledge."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

from bench.retrieval_data import DATA


@dataclass(frozen=True)
class Split:
    texts: list[str]
    intents: list[str]
    handlers: list[str]


@dataclass(frozen=True)
class IntentSet:
    name: str
    train: Split
    validation: Split
    test: Split


def clinc150() -> IntentSet:
    data = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    domains = json.loads((DATA / "clinc150" / "domains.json").read_text(encoding="utf-8"))
    small_talk = set(domains["small_talk"])

    def handler(intent: str) -> str:
        if intent == "oos":
            return "out_of_scope"
        return "chitchat" if intent in small_talk else "knowledge"

    def split(*keys: str) -> Split:
        rows = [row for key in keys for row in data[key]]
        return Split([r[0] for r in rows], [r[1] for r in rows], [handler(r[1]) for r in rows])

    return IntentSet("clinc150", split("train", "oos_train"), split("val", "oos_val"), split("test", "oos_test"))


def banking77(validation_every: int = 10) -> IntentSet:
    """Banking77 has no validation split: every tenth training row is held out for calibration.
    All of its intents are questions a bank's knowledge base answers (handler: knowledge)."""

    def read(name: str) -> list[tuple[str, str]]:
        with open(DATA / "banking77" / name, encoding="utf-8") as f:
            return [(row["text"], row["category"]) for row in csv.DictReader(f)]

    def split(rows: list[tuple[str, str]]) -> Split:
        return Split([r[0] for r in rows], [r[1] for r in rows], ["knowledge"] * len(rows))

    train = read("train.csv")
    keep = [r for i, r in enumerate(train) if i % validation_every]
    held = [r for i, r in enumerate(train) if not i % validation_every]
    return IntentSet("banking77", split(keep), split(held), split(read("test.csv")))


SETS = {"clinc150": clinc150, "banking77": banking77}
