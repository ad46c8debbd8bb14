"""Training with a loss at every step (many-to-many; ``symbolic.outputs``): per-step labels, the
generated module's loss_and_grad, Adam, and a held-out loss.

Two data sets: ``copy``, a synthetic task whose label at step t is the symbol read at t − 1 (so the
cell must carry one step of memory; the first step's label is masked), and ``text FILE``, a
character-level language model: the file's characters are the vocabulary, chunks of n characters are
read and each next character predicted (softmax over the vocabulary, the mean over every step), the
last tenth of the file held out and its loss reported in bits per character. ``sample`` prints text
generated from a seed character, reading a window of the last n characters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError

#: The held-out tail of a text file, and the characters it must have at least.
HELD_OUT_FRACTION = 0.1
MIN_TEXT = 20
#: The most one-hot entries (characters × distinct characters) a text may make: 2·10^7 float64s, 160 MB.
MAX_ONE_HOT = 20_000_000
#: The most bytes read from a text file (/dev/zero or a never-ending pipe must not fill the memory).
MAX_TEXT_BYTES = 64 * 2**20
#: The copy task's sequences (training and held out).
COPY_TRAIN, COPY_HELD_OUT = 256, 128


@dataclass(frozen=True)
class StepData:
    """Sequences with a label at every step: x (B, n, D), y (B, n), mask (B, n) or None, and a held-out
    set; ``vocabulary``: a text's characters (None for the copy task)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None
    held_x: np.ndarray
    held_y: np.ndarray
    held_mask: np.ndarray | None
    vocabulary: str | None = None


def _labels(tokens: np.ndarray, outputs) -> np.ndarray:
    """The copy task's label of a token for the loss: a class (softmax), a bit (bce), a value (mse)."""
    if outputs.loss == "softmax":
        return tokens % outputs.classes
    bits = (tokens % 2).astype(float)
    return bits if outputs.loss == "bce" else bits - 0.5


def copy_task(outputs, inputs: int, steps: int, seed: int) -> StepData:
    """Symbols drawn uniformly from D; the label at step t is the symbol of step t − 1 (step 1 masked)."""
    if steps < 2:
        raise UsageError("the copy task needs --steps 2 or more: its label at step t is the symbol of step t - 1")
    rng = np.random.default_rng(seed + 1)

    def draw(count):
        tokens = rng.integers(0, inputs, size=(count, steps))
        labels = np.zeros((count, steps), dtype=tokens.dtype)
        labels[:, 1:] = tokens[:, :-1]
        mask = np.ones((count, steps))
        mask[:, 0] = 0.0
        return np.eye(inputs)[tokens], _labels(labels, outputs), mask

    x, y, mask = draw(COPY_TRAIN)
    held_x, held_y, held_mask = draw(COPY_HELD_OUT)
    return StepData(f"copy (D = {inputs}, n = {steps}: the label at step t is the symbol of step t - 1)",
                    x, y, mask, held_x, held_y, held_mask)


def read_text(path: str) -> str:
    """A text file's characters; one-line UsageErrors for a missing, empty, short or binary file."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        raise UsageError(f"text file {path} cannot be read ({error.strerror}): give a readable text file") from None
    if len(raw) > MAX_TEXT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_TEXT_BYTES // 2**20} MB: train on a part of it (e.g. head -c "
                         "1000000 FILE > part.txt)")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError(f"{path} is UTF-16 text: save it as UTF-8")
    if b"\0" in raw:
        raise UsageError(f"{path} is a binary file (it holds NUL bytes): give a text file")
    try:   # utf-8-sig: a byte-order mark is not a character of the text
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text: give a text file") from None
    # Windows' and old Macs' line ends are one character, as Python's text mode reads them
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise UsageError(f"{path} is empty: give a text of a few thousand characters")
    if len(text) < MIN_TEXT:
        raise UsageError(f"{path} has {len(text)} character{'' if len(text) == 1 else 's'}, too few to train on "
                         "and hold out a tenth: "
                         f"give at least {MIN_TEXT}")
    if len(set(text)) < 2:
        raise UsageError(f"{path} holds one character ({text[0]!r}) and nothing else: a language model needs at "
                         "least two distinct characters to predict")
    if len(text) * len(set(text)) > MAX_ONE_HOT:
        raise UsageError(f"{path} has {len(text)} characters, {len(set(text))} distinct: its one-hot inputs would "
                         f"take more than {MAX_ONE_HOT * 8 // 10**6} MB: train on a part of it (e.g. its first "
                         f"{MAX_ONE_HOT // len(set(text))} characters)")
    return text


def text_task(path: str, steps: int) -> StepData:
    """Chunks of n characters, each next character the label; the last tenth held out."""
    text = read_text(path)
    vocabulary = "".join(sorted(set(text)))
    index = {char: k for k, char in enumerate(vocabulary)}
    ids = np.array([index[char] for char in text])
    split = int(len(ids) * (1 - HELD_OUT_FRACTION))
    steps = max(1, min(steps, split - 1, len(ids) - split - 1))

    def chunks(part):
        count = (len(part) - 1) // steps
        starts = np.arange(count) * steps
        inputs = np.stack([part[s:s + steps] for s in starts])
        labels = np.stack([part[s + 1:s + steps + 1] for s in starts])
        return np.eye(len(vocabulary))[inputs], labels

    x, y = chunks(ids[:split])
    held_x, held_y = chunks(ids[split:])
    return StepData(f"text {path} ({len(text)} characters, {len(vocabulary)} distinct; chunks of {steps})",
                    x, y, None, held_x, held_y, None, vocabulary)


def check_memory(shapes: dict, data_entries: int, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a run whose weights (five float64 copies: the weights, the
    gradient, Adam's two moments, a step) and one-hot data do not fit in the memory available."""
    from .weights import available_memory

    available = available_memory() if available is None else available
    weights = sum(math.prod(shape) for shape in shapes.values())
    needed = 8 * (5 * weights + data_entries)
    if available is not None and needed > available:
        raise UsageError(f"this run needs about {needed / 1e9:.3g} GB of memory ({weights:.3g} weights, "
                         f"{data_entries:.3g} one-hot input entries) but {available / 1e9:.3g} GB is available: "
                         "choose a smaller --hidden, --classes or --steps")


@dataclass
class StepRun:
    """A run: the loss per epoch, the held-out loss at the end, the weights, and the seconds."""

    data: str
    outputs: str
    losses: list = field(default_factory=list)
    held_out: float = math.nan
    bits_per_character: float | None = None
    accuracy: float | None = None
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    sample: str | None = None
    #: the epoch whose loss or weights left float64's range (None: the run finished)
    diverged_at: int | None = None

    def as_json(self) -> dict:
        """Plain JSON: a loss that is not finite (a diverged run) is null, not NaN."""
        return {"data": self.data, "outputs": self.outputs, "losses": [_finite(v) for v in self.losses],
                "held_out_loss": _finite(self.held_out), "bits_per_character": _finite(self.bits_per_character),
                "held_out_accuracy": self.accuracy, "seconds": self.seconds, "sample": self.sample,
                "diverged_at": self.diverged_at}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def train_steps(module, data: StepData, outputs, epochs: int, lr: float, seed: int, batch: int = 32) -> StepRun:
    """Adam (Kingma & Ba 2015) on mini-batches of ``batch`` sequences, gradients from the module."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = {name: np.asarray(value, dtype=float) for name, value in module.init_params(seed).items()}
    first = {name: np.zeros_like(value) for name, value in params.items()}
    second = {name: np.zeros_like(value) for name, value in params.items()}
    run = StepRun(data.name, outputs.describe)
    count = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(data.x))
        total, seen = 0.0, 0
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            mask = None if data.mask is None else data.mask[rows]
            # overflow is found below and said once (diverged_at), not as NumPy's warnings
            with np.errstate(over="ignore", invalid="ignore"):
                loss, grads = module.loss_and_grad(data.x[rows], data.y[rows], params, mask=mask)
                total, seen, count = total + loss * len(rows), seen + len(rows), count + 1
                for name, gradient in grads.items():
                    first[name] = 0.9 * first[name] + 0.1 * gradient
                    second[name] = 0.999 * second[name] + 0.001 * gradient**2
                    step = first[name] / (1 - 0.9**count) / (np.sqrt(second[name] / (1 - 0.999**count)) + 1e-8)
                    params[name] = params[name] - lr * step
            # the module refuses weights that are not finite: stop here and say so
            if not (math.isfinite(loss) and all(np.isfinite(value).all() for value in params.values())):
                run.diverged_at = epoch
                break
        run.losses.append(total / seen)
        if run.diverged_at is not None:
            break
    run.params = params
    run.seconds = time.perf_counter() - started
    if run.diverged_at is not None:
        return run
    run.held_out = module.loss(data.held_x, data.held_y, params, mask=data.held_mask)
    if data.vocabulary is not None and outputs.reduction == "all":
        run.bits_per_character = run.held_out / math.log(2)
    if outputs.loss in ("softmax", "bce"):
        run.accuracy = _accuracy(module, data, outputs, params)
    run.seconds = time.perf_counter() - started
    return run


def _accuracy(module, data: StepData, outputs, params) -> float:
    """The held-out share of unmasked steps whose most probable class (or rounded σ) is the label."""
    y_hat = module.forward(data.held_x, params)
    guess = y_hat.argmax(axis=-1) if outputs.loss == "softmax" else (y_hat > 0.5).astype(float)
    right = guess == data.held_y
    if data.held_mask is not None:
        return float(right[data.held_mask > 0].mean())
    return float(right.mean())


def sample(module, params: dict, vocabulary: str, length: int, window: int, seed: int) -> str:
    """``length`` characters drawn one by one from the softmax, starting from a seed character drawn
    from the vocabulary, each read with the last ``window`` characters before it (the training chunks'
    length: the module starts every window from zero states)."""
    rng = np.random.default_rng(seed)
    eye = np.eye(len(vocabulary))
    ids = [int(rng.integers(len(vocabulary)))]
    for _ in range(length):
        probabilities = module.forward(eye[ids[-window:]][np.newaxis], params)[0, -1]
        probabilities = np.asarray(probabilities, dtype=float)
        ids.append(int(rng.choice(len(vocabulary), p=probabilities / probabilities.sum())))
    return "".join(vocabulary[k] for k in ids)


def summary(run: StepRun) -> str:
    lines = [f"data: {run.data}", f"outputs: {run.outputs}",
             f"training loss: {run.losses[0]:.4f} (epoch 1) -> {run.losses[-1]:.4f} (epoch {len(run.losses)})"]
    if run.diverged_at is not None:
        lines.append(f"diverged in epoch {run.diverged_at}: the loss or the weights left float64's range; "
                     "lower --lr")
    else:
        lines.append(f"held-out loss: {run.held_out:.4f}")
    if run.bits_per_character is not None:
        lines.append(f"held-out bits per character: {run.bits_per_character:.3f}")
    if run.accuracy is not None:
        lines.append(f"held-out accuracy (unmasked steps): {run.accuracy:.3f}")
    if run.sample is not None:
        lines.append(f"sample: {run.sample!r}")
    lines.append(f"seconds: {run.seconds:.1f}")
    return "\n".join(lines) + "\n"


__all__ = ["StepData", "StepRun", "check_memory", "copy_task", "read_text", "sample", "summary", "text_task", "train_steps"]
