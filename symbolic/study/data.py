"""Training data: the notes' three sentences, a user's CSV, and the long-dependency set.

A data set is a list of words per sequence and a 0/1 label, stored compactly as vocabulary ids
grouped by sequence length (a ``Bucket`` per length), because the generated module takes a batch
x of shape (B, N, D) with one N. One-hot inputs are built a chunk at a time (``Bucket.chunks``), so
a large file never becomes one (B, N, D) array.
"""

from __future__ import annotations

import contextlib
import csv
import os
from array import array
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..model import VOCABULARY

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


#: Longest field: a quoted text may span lines (csv's own limit, 128 KB, is raised to this).
MAX_FIELD_CHARACTERS = 16 << 20


class _Lines:
    """The file's lines decoded as UTF-8 one at a time (a bad byte names its line), keeping the lines
    of the record being read, so an unclosed quote is reported at the line where it opens."""

    def __init__(self, path: str, stream):
        self.path = path
        # readline with a limit, so an endless line is cut off; plain iteration for a bare line iterator.
        reader = getattr(stream, "readline", None)
        self._raw = iter(lambda: reader(MAX_LINE_BYTES + 1), b"") if reader else iter(stream)
        self.number = 0
        self.record: list[str] = []  # the lines of the current record
        self.ended = False  # the file ended while a record was read

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = next(self._raw, None)
        if raw is None:
            self.ended = True
            raise StopIteration
        self.number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise UsageError(
                f"{self.path}, line {self.number}: longer than {MAX_LINE_BYTES // (1 << 20)} MB: give one "
                "sequence per line (text,label)"
            )
        try:
            line = raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{self.path}, line {self.number}: not valid UTF-8 text: save the file as UTF-8") from None
        self.record.append(line)
        return line

    def next_row(self, reader) -> list[str] | None:
        """The next record; a quote left open (to the end of the file or past the field limit) is a
        UsageError naming the line where it opens."""
        self.record, self.ended = [], False
        first = self.number + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            opened = _open_quote(self.record, first)
            if opened is not None:
                raise self._unclosed(opened, f"runs past {MAX_FIELD_CHARACTERS >> 20} MB") from None
            raise UsageError(f"{self.path}, line {reader.line_num}: malformed CSV ({error})") from None
        if self.ended and row is not None:
            opened = _open_quote(self.record, first)
            if opened is not None:
                raise self._unclosed(opened, "is not closed before the end of the file")
        return row

    def _unclosed(self, line: int, how: str) -> UsageError:
        return UsageError(f"{self.path}, line {line}: a quoted field opens here and {how}: add its closing quote (\")")


def _open_quote(lines: list[str], first: int) -> int | None:
    """The line number of a quote the record leaves open (the csv module's default dialect: a quote
    opens a field only at its start, and "" inside a quoted field is a quote); None when all closed."""
    quoted, at_start, opened = False, True, None
    for number, line in enumerate(lines, start=first):
        position = 0
        while position < len(line):
            character = line[position]
            if quoted:
                if character == '"' and line.startswith('""', position):
                    position += 1  # an escaped quote
                elif character == '"':
                    quoted = False
            elif character == '"' and at_start:
                quoted, opened = True, number
            at_start = not quoted and character in ",\r\n"
            position += 1
    return opened if quoted else None


@contextlib.contextmanager
def _field_limit(limit: int):
    """csv's field size limit raised for one read (it is process-wide), then put back."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _columns(path: str, header: list[str]) -> tuple[int, int]:
    """Where the text and label columns are; a missing or twice-named one is a UsageError."""
    columns = [name.strip().lower() for name in header]
    for name in ("text", "label"):
        if name not in columns:
            raise UsageError(
                f"{path}, line 1: missing column {name!r} in the header "
                f"({','.join(header) or 'empty'}): the first line must name the columns text,label"
            )
        places = [str(index + 1) for index, column in enumerate(columns) if column == name]
        if len(places) > 1:
            raise UsageError(
                f"{path}, line 1: the header names column {name!r} {len(places)} times (columns "
                f"{', '.join(places)}): keep one {name} column, or rename the others"
            )
    return columns.index("text"), columns.index("label")


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
    with stream, _field_limit(MAX_FIELD_CHARACTERS):
        lines = _Lines(path, stream)
        reader = csv.reader(lines)
        header = lines.next_row(reader)
        if header is None:
            raise UsageError(f"{path} is empty: the first line must be the header text,label")
        text_at, label_at = _columns(path, header)
        while (row := lines.next_row(reader)) is not None:
            _add_row(path, reader.line_num, row, text_at, label_at, words, builder)
    if not builder.count:
        raise UsageError(f"{path} has a header but no data rows: add lines like 'cat mat rat,1'")
    # Ids were handed out in order of appearance; renumber them for the sorted vocabulary.
    vocabulary = tuple(sorted(words))
    renumber = np.empty(len(words), dtype=np.int32)
    for new, word in enumerate(vocabulary):
        renumber[words[word]] = new
    return builder.build(os.path.basename(path), vocabulary, renumber)


def _add_row(path: str, line: int, row: list[str], text_at: int, label_at: int, words: dict, builder) -> None:
    if not row or all(not cell.strip() for cell in row):
        return  # blank lines are allowed
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


def load(spec: str) -> tuple[Dataset, Dataset | None]:
    """``notes``, ``long`` or a CSV path → (training set, held-out set or None)."""
    if spec == "notes":
        return notes(), None
    if spec == "long":
        return long_dependency(), long_held_out()
    if not spec.lower().endswith(".csv") and not os.path.exists(spec):
        raise UsageError(f"unknown data {spec!r}: use notes, long or the path of a CSV file (text,label); copy or "
                         "text FILE.txt for a loss at every step")
    return load_csv(spec), None
