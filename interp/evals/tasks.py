"""Binary probing tasks with no download: labelled from the bundled corpus, or from a user's labelled file.

Corpus tasks (each example is one speech or one stage direction of a play):
- ``play:<title>``: which play a speech comes from, one-vs-rest over ``PLAYS``;
- ``genre:<genre>``: comedy / tragedy / history (the First Folio's grouping), one-vs-rest;
- ``stage_direction``: a bracketed stage direction vs a spoken line;
- ``verse``: verse vs prose speeches, by a layout rule: in this edition every verse line starts with a
  capital letter, while prose wraps at ~70 characters and continues in lower case (speeches of three
  lines or more that fit neither rule are left out).
A user task is a JSONL or Parquet file with ``text`` and ``label`` fields (two classes or more;
more than two: one-vs-rest per class, as SAEBench does with its multi-class datasets).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from interp.models.data import DEMO_CORPUS
from interp.store.errors import InputError

PLAYS = ("hamlet", "macbeth", "twelfth_night", "henry_v", "midsummer_nights_dream")
GENRES = {
    "comedy": ("alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
               "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
               "much_ado_about_nothing", "taming_of_the_shrew", "tempest", "twelfth_night",
               "two_gentlemen_of_verona", "winters_tale"),
    "history": ("henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
                "henry_vi_part_3", "henry_viii", "john", "richard_ii", "richard_iii"),
    "tragedy": ("antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth",
                "othello", "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus",
                "troilus_and_cressida"),
}
MIN_PER_CLASS = 20
SPEAKER = re.compile(r"^[A-Z][A-Za-z'\- ]{0,30}\.?$")  # "HAMLET." / "Ham." / "THESEUS"


@dataclass(frozen=True)
class BinaryTask:
    """Texts with 0/1 labels, split into train and test; ``dataset`` groups the one-vs-rest tasks of one source."""

    name: str
    dataset: str
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]


def _starts(line: str) -> str:
    stripped = line.lstrip("'\"([-_ ")
    return stripped[:1]


def verse_or_prose(lines: list[str]) -> str | None:
    """``verse`` when every line starts with a capital, ``prose`` when most continuation lines start in lower
    case and lines are long (wrapped); None for short or mixed speeches."""
    if len(lines) < 3:
        return None
    if all(_starts(line).isupper() for line in lines):
        return "verse"
    lower = sum(_starts(line).islower() for line in lines[1:])
    if lower >= len(lines[1:]) / 2 and sum(map(len, lines)) / len(lines) > 50:
        return "prose"
    return None


@lru_cache(maxsize=2)
def corpus_examples(path: Path = DEMO_CORPUS) -> list[dict]:
    """Every speech (``kind`` speech, with ``form`` verse/prose/None) and stage direction of the plays."""
    plays = {title for titles in GENRES.values() for title in titles} | set(PLAYS)
    genre_of = {title: genre for genre, titles in GENRES.items() for title in titles}
    examples = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["title"] not in plays:
                continue
            for block in re.split(r"\n\s*\n", record["text"]):
                lines = [b.strip() for b in block.strip().splitlines() if b.strip()]
                if not lines:
                    continue
                base = {"play": record["title"], "genre": genre_of.get(record["title"])}
                if lines[0].startswith("[") and lines[-1].endswith("]"):
                    examples.append(base | {"kind": "stage", "text": " ".join(lines), "form": None})
                elif len(lines) >= 2 and SPEAKER.match(lines[0]) and (lines[0].isupper() or len(lines[0]) < 12):
                    body = lines[1:]
                    text = "\n".join(body)
                    if len(text) >= 30:
                        examples.append(base | {"kind": "speech", "text": text, "form": verse_or_prose(body)})
    return examples


def _split(items: list[str], n_train: int, n_test: int, rng: random.Random) -> tuple[list[str], list[str]]:
    items = rng.sample(items, min(len(items), n_train + n_test))
    n_tr = round(len(items) * n_train / (n_train + n_test))
    return items[:n_tr], items[n_tr:]


def binary_task(name: str, dataset: str, positives: list[str], negatives: list[str], n_train: int, n_test: int,
                seed: int) -> BinaryTask:
    """Balanced train and test sets: up to ``n_train`` / ``n_test`` examples of each class, drawn disjointly."""
    rng = random.Random(f"{seed}:{name}")
    n = min(len(positives), len(negatives))
    pos_train, pos_test = _split(rng.sample(positives, n), n_train, n_test, rng)
    neg_train, neg_test = _split(rng.sample(negatives, n), n_train, n_test, rng)
    return BinaryTask(name, dataset, pos_train + neg_train, [1] * len(pos_train) + [0] * len(neg_train),
                      pos_test + neg_test, [1] * len(pos_test) + [0] * len(neg_test))


def one_vs_rest(dataset: str, texts: list[str], labels: list[str], n_train: int, n_test: int, seed: int,
                prefix: str) -> list[BinaryTask]:
    """One task per class (one task when there are two classes): the class against the others, the negatives
    drawn evenly from every other class (SAEBench's ``prepare_probe_data``)."""
    classes = sorted(set(labels))
    by_class = {c: [t for t, label in zip(texts, labels) if label == c] for c in classes}
    tasks = []
    for c in classes[1:] if len(classes) == 2 else classes:
        others = [k for k in classes if k != c]
        rng = random.Random(f"{seed}:{prefix}{c}")
        share = -(-len(by_class[c]) // len(others))
        negatives = [t for k in others for t in rng.sample(by_class[k], min(share, len(by_class[k])))]
        tasks.append(binary_task(f"{prefix}{c}", dataset, by_class[c], negatives, n_train, n_test, seed))
    return tasks


def corpus_tasks(n_train: int = 250, n_test: int = 100, seed: int = 0, path: Path = DEMO_CORPUS) -> list[BinaryTask]:
    """The corpus's tasks: play one-vs-rest, genre one-vs-rest, stage direction vs spoken, verse vs prose."""
    examples = corpus_examples(path)
    speeches = [e for e in examples if e["kind"] == "speech"]
    in_plays = [e for e in speeches if e["play"] in PLAYS]
    with_genre = [e for e in speeches if e["genre"]]
    formed = [e for e in speeches if e["form"]]
    return [
        *one_vs_rest("corpus/play", [e["text"] for e in in_plays], [e["play"] for e in in_plays], n_train, n_test,
                     seed, "play:"),
        *one_vs_rest("corpus/genre", [e["text"] for e in with_genre], [e["genre"] for e in with_genre], n_train,
                     n_test, seed, "genre:"),
        binary_task("stage_direction", "corpus/stage_direction", [e["text"] for e in examples if e["kind"] == "stage"],
                    [e["text"] for e in speeches], n_train, n_test, seed),
        binary_task("verse", "corpus/verse_prose", [e["text"] for e in formed if e["form"] == "verse"],
                    [e["text"] for e in formed if e["form"] == "prose"], n_train, n_test, seed),
    ]


def read_task_file(path: Path | str) -> tuple[list[str], list[str]]:
    """``text`` and ``label`` of a JSONL or Parquet file, checked: every row labelled, two classes or more,
    at least ``MIN_PER_CLASS`` examples of each."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"task file {path} does not exist; give a .jsonl or .parquet file with 'text' and 'label'")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".jsonl":
        try:
            frame = pd.read_json(path, lines=True)
        except ValueError as error:
            raise InputError(f"task file {path} is not valid JSONL ({error}); one JSON object per line") from None
    else:
        raise InputError(f"task file {path} must end in .jsonl or .parquet")
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise InputError(f"task file {path} has no {' or '.join(repr(m) for m in missing)} field; every record "
                         "needs 'text' and 'label'")
    unlabelled = frame.index[frame["label"].isna() | (frame["label"].astype(str).str.strip() == "")].tolist()
    if unlabelled:
        raise InputError(f"task file {path}: {len(unlabelled)} rows have no label (first: row {unlabelled[0] + 1}); "
                         "give every row a label or drop it")
    labels = frame["label"].astype(str).tolist()
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2:
        raise InputError(f"task file {path} has one class only ({counts.index[0]!r}); a probe needs two classes "
                         "or more")
    small = counts[counts < MIN_PER_CLASS]
    if len(small):
        raise InputError(f"task file {path}: class {small.index[0]!r} has {int(small.iloc[0])} examples; give at least "
                         f"{MIN_PER_CLASS} per class (they are split into train and test)")
    return frame["text"].astype(str).tolist(), labels


def file_tasks(path: Path | str, n_train: int = 250, n_test: int = 100, seed: int = 0) -> list[BinaryTask]:
    """A user's labelled file as one-vs-rest binary tasks (dataset ``user/<file stem>``)."""
    texts, labels = read_task_file(path)
    return one_vs_rest(f"user/{Path(path).stem}", texts, labels, n_train, n_test, seed, f"{Path(path).stem}:")
