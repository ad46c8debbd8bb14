"""Training data: the notes' three sentences, a user's CSV, and the long-dependency set.

A data set is a list of words per sequence and a 0/1 label, stored compactly as vocabulary ids
grouped by sequence length (a ``Bucket`` per length), because the generated module takes a batch
x of shape (B, N, D) with one N. One-hot inputs are built a chunk at a time (``Bucket.chunks``), so
a large file never becomes one (B, N, D) array.
"""

from __future__ import annotations

import csv
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError
from .model import VOCABULARY

#: The notes' example: "cat mat rat" → 1, "rat rat mat" → 1, "mat mat cat" → 0.
NOTES = (("cat mat rat", 1), ("rat rat mat", 1), ("mat mat cat", 0))

#: The long-dependency set: length, sizes and seeds (the held-out set is drawn the same way).
LONG_STEPS = 50
LONG_TRAIN = 200
LONG_HELD_OUT = 100
LONG_SEED = 1234
#: The word whose presence at the first position makes the label 1 in the long set.
LONG_MARKER = "cat"

#: Largest number of floats in one one-hot chunk (B·N·D), about 32 MB of float64.
CHUNK_ELEMENTS = 4_000_000


@dataclass
class Bucket:
    """All sequences of one length: ``ids`` (B, N) vocabulary indices, ``labels`` (B,) of 0/1."""

    ids: np.ndarray
    labels: np.ndarray
    #: Position of each sequence in the data set (to report predictions in the file's order).
    order: np.ndarray

    @property
    def length(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def chunks(self, vocabulary_size: int, max_elements: int | None = None):
        """Yield (x one-hot (b, N, D), y (b,)) for consecutive slices of this bucket."""
        for ids, labels in self.id_chunks(vocabulary_size, max_elements):
            yield one_hot(ids, vocabulary_size), labels

    def id_chunks(self, width: int, max_elements: int | None = None):
        """Yield (ids (b, N), y (b,)) for consecutive slices of at most ``max_elements`` // (N·width)
        sequences (at least one): ``width`` floats per word are what the caller makes of each id."""
        max_elements = CHUNK_ELEMENTS if max_elements is None else max_elements
        size = max(1, max_elements // max(1, self.length * width))
        for start in range(0, len(self), size):
            yield self.ids[start : start + size], self.labels[start : start + size].astype(float)


@dataclass
class Dataset:
    """Sequences over ``vocabulary`` with 0/1 labels, grouped by length."""

    name: str
    vocabulary: tuple[str, ...]
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(bucket) for bucket in self.buckets)

    @property
    def lengths(self) -> list[int]:
        return sorted(bucket.length for bucket in self.buckets)

    def texts(self) -> list[str]:
        """Each sequence written back as words, in the data set's order."""
        texts = [""] * self.size
        for bucket in self.buckets:
            for position, row in zip(bucket.order, bucket.ids):
                texts[int(position)] = " ".join(self.vocabulary[i] for i in row)
        return texts

    def labels(self) -> np.ndarray:
        labels = np.zeros(self.size, dtype=np.int8)
        for bucket in self.buckets:
            labels[bucket.order] = bucket.labels
        return labels


def one_hot(ids: np.ndarray, vocabulary_size: int) -> np.ndarray:
    """ids (..., N) → one-hot float64 (..., N, D)."""
    ids = np.asarray(ids)
    encoded = np.zeros(ids.shape + (vocabulary_size,), dtype=float)
    np.put_along_axis(encoded, ids[..., None], 1.0, axis=-1)
    return encoded


def encode(words, vocabulary=VOCABULARY) -> np.ndarray:
    """A list of words (or a whitespace-separated string) → one-hot (N, D) over ``vocabulary``."""
    if isinstance(words, str):
        words = words.split()
    index = {word: i for i, word in enumerate(vocabulary)}
    unknown = [word for word in words if word not in index]
    if unknown:
        raise UsageError(f"unknown word {unknown[0]!r}: the vocabulary is {', '.join(vocabulary)}")
    if not words:
        raise UsageError("the input sequence is empty: give at least one word, e.g. cat,mat,rat")
    return one_hot(np.array([index[word] for word in words]), len(vocabulary))


class _Builder:
    """Collects (ids, label) rows into per-length flat arrays (4 bytes a word, no Python lists)."""

    def __init__(self):
        self.groups: dict[int, tuple[array, array, array]] = {}
        self.count = 0

    def add(self, ids, label: int) -> None:
        group = self.groups.get(len(ids))
        if group is None:
            group = self.groups[len(ids)] = (array("i"), array("b"), array("q"))
        group[0].extend(ids)
        group[1].append(label)
        group[2].append(self.count)
        self.count += 1

    def build(self, name: str, vocabulary: tuple[str, ...], renumber: np.ndarray | None = None) -> Dataset:
        """The buckets, as NumPy views of the collected arrays (no copies)."""
        dataset = Dataset(name, vocabulary)
        for length in sorted(self.groups):
            ids, labels, order = self.groups.pop(length)
            matrix = np.frombuffer(ids, dtype=np.int32).reshape(-1, length)
            if renumber is not None:
                matrix = matrix.copy() if not matrix.flags.writeable else matrix
                for start in range(0, len(matrix), 65536):  # in place, a block at a time
                    block = matrix[start : start + 65536]
                    block[...] = renumber[block]
            dataset.buckets.append(
                Bucket(matrix, np.frombuffer(labels, dtype=np.int8), np.frombuffer(order, dtype=np.int64))
            )
        return dataset


def _from_rows(name: str, rows, vocabulary: tuple[str, ...]) -> Dataset:
    """Group (ids, label) rows by length into buckets; ids index ``vocabulary``."""
    builder = _Builder()
    for ids, label in rows:
        builder.add([int(i) for i in ids], int(label))
    return builder.build(name, vocabulary)


def notes() -> Dataset:
    """The notes' three sentences over the vocabulary cat, mat, rat."""
    index = {word: i for i, word in enumerate(VOCABULARY)}
    rows = [([index[word] for word in text.split()], label) for text, label in NOTES]
    return _from_rows("notes", rows, VOCABULARY)


def long_dependency(seed: int = LONG_SEED, size: int = LONG_TRAIN, steps: int = LONG_STEPS) -> Dataset:
    """Sequences of ``steps`` words over the notes' vocabulary; label 1 iff the first word is "cat".

    Half the sequences start with "cat", the others with "mat" or "rat"; the other 49 words are
    uniform noise, so the only evidence sits ``steps − 1`` timesteps before the output.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(size, dtype=np.int8)
    labels[: size // 2] = 1
    rng.shuffle(labels)
    ids = rng.integers(0, len(VOCABULARY), size=(size, steps), dtype=np.int32)
    marker = VOCABULARY.index(LONG_MARKER)
    others = np.array([i for i in range(len(VOCABULARY)) if i != marker], dtype=np.int32)
    ids[:, 0] = np.where(labels == 1, marker, rng.choice(others, size=size))
    return _from_rows("long", zip(ids, labels), VOCABULARY)


def long_held_out() -> Dataset:
    """The held-out long set: drawn the same way with another fixed seed."""
    dataset = long_dependency(seed=LONG_SEED + 1, size=LONG_HELD_OUT)
    dataset.name = "long (held out)"
    return dataset


# -- CSV -------------------------------------------------------------------------------------------


#: Longest line read from a CSV; a longer one (say a 100 MB file without line breaks) is refused
#: after reading this much, instead of being held in memory whole.
MAX_LINE_BYTES = 1 << 20


def _decoded_lines(path: str, stream) -> Iterator[str]:
    """The file's lines decoded as UTF-8 one at a time; a bad byte names its line."""
    # readline with a limit, so an endless line is cut off; plain iteration for a bare line iterator.
    reader = getattr(stream, "readline", None)
    lines = iter(lambda: reader(MAX_LINE_BYTES + 1), b"") if reader else iter(stream)
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise UsageError(
                f"{path}, line {number}: longer than {MAX_LINE_BYTES // (1 << 20)} MB: give one sequence "
                "per line (text,label)"
            )
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path}, line {number}: not valid UTF-8 text: save the file as UTF-8") from None
        yield line


def load_csv(path: str | os.PathLike) -> Dataset:
    """Read a CSV with columns ``text`` and ``label`` (0 or 1), streaming it row by row.

    Texts are split on whitespace; the vocabulary is every word seen, sorted, and D is its size.
    """
    path = str(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the with block below closes it
    except FileNotFoundError:
        raise UsageError(f"data file {path} does not exist: give a CSV with columns text,label") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory: give a CSV file with columns text,label") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    words: dict[str, int] = {}
    builder = _Builder()
    with stream:
        reader = csv.reader(_decoded_lines(path, stream))
        try:
            header = next(reader, None)
        except csv.Error as error:
            raise UsageError(f"{path}, line 1: not a readable CSV header ({error})") from None
        if header is None:
            raise UsageError(f"{path} is empty: the first line must be the header text,label")
        columns = [name.strip().lower() for name in header]
        missing = [name for name in ("text", "label") if name not in columns]
        if missing:
            raise UsageError(
                f"{path}, line 1: missing column {missing[0]!r} in the header "
                f"({','.join(header) or 'empty'}): the first line must name the columns text,label"
            )
        text_at, label_at = columns.index("text"), columns.index("label")
        while True:
            try:
                row = next(reader, None)
            except csv.Error as error:
                raise UsageError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from None
            if row is None:
                break
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines are allowed
            if len(row) <= max(text_at, label_at):
                raise UsageError(
                    f"{path}, line {line}: expected columns text,label but the row has {len(row)} "
                    "value(s): check the commas (quote texts that contain one)"
                )
            label = row[label_at].strip()
            if label not in ("0", "1"):
                raise UsageError(f"{path}, line {line}: label must be 0 or 1, got {label!r}")
            tokens = row[text_at].split()
            if not tokens:
                raise UsageError(f"{path}, line {line}: the text is empty: give at least one word")
            builder.add([words.setdefault(token, len(words)) for token in tokens], int(label))
    if not builder.count:
        raise UsageError(f"{path} has a header but no data rows: add lines like 'cat mat rat,1'")
    # Ids were handed out in order of appearance; renumber them for the sorted vocabulary.
    vocabulary = tuple(sorted(words))
    renumber = np.empty(len(words), dtype=np.int32)
    for new, word in enumerate(vocabulary):
        renumber[words[word]] = new
    return builder.build(os.path.basename(path), vocabulary, renumber)


def load(spec: str) -> tuple[Dataset, Dataset | None]:
    """``notes``, ``long`` or a CSV path → (training set, held-out set or None)."""
    if spec == "notes":
        return notes(), None
    if spec == "long":
        return long_dependency(), long_held_out()
    if not spec.lower().endswith(".csv") and not os.path.exists(spec):
        raise UsageError(f"unknown data {spec!r}: use notes, long or the path of a CSV file (text,label)")
    return load_csv(spec), None
