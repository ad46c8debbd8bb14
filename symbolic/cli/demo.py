"""``bptt demo``: the whole story on the notes' example, written to one directory.

1. the derivation for n = 3, tanh: LaTeX, PDF (when pdflatex is on PATH) and Markdown;
2. the generated NumPy module and its gradient check report (``bptt check``);
3. the analysis of a 20-word sequence for tanh at w_h = 0.5 (vanishing) and ReLU at w_h = 1.5
   (exploding): table, JSON and plot each;
4. training on the notes' three sentences with the defaults: log, JSON and loss plot;
5. the LSTM against the plain RNN (issue 7): ``bptt analyze --cell lstm`` on the same 20 words
   (table, JSON, plot), and ``bptt train --data long`` with ``--cell lstm`` and with the tanh RNN at
   their defaults (logs, JSON, one plot of both loss curves);
6. the notes' remedies side by side (``bptt remedies``): the table and its plot;
7. an ``index.md`` that shows it all, and a listing on stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..files import MARKER, deferred_signals, non_regular, signals_interrupt, write_atomic

#: The manifest of a directory made by ``bptt demo`` (each file and its SHA-256); only such a directory
#: whose files are unchanged (or an empty one) is written into without --force.
DIRECTORY_MARKER = ".bptt-demo"
#: The notes' example.
STEPS, ACTIVATION = 3, "tanh"
#: The two analyses: (activation, w_h, what the notes say happens).
ANALYSES = (("tanh", 0.5, "vanishing"), ("relu", 1.5, "exploding"))
ANALYSIS_STEPS = 20
PDFLATEX_TIMEOUT = 120
CHECK_TIMEOUT = 300


@dataclass
class Written:
    path: Path
    what: str


DERIVATION_STEM = f"derivation_{ACTIVATION}_n{STEPS}"
MODULE_NAME = f"rnn_{ACTIVATION}_n{STEPS}.py"
LSTM_ANALYSIS_STEM = f"analysis_lstm_n{ANALYSIS_STEPS}"
REMEDIES_NAMES = ("remedies.txt", "remedies.png")


def _analysis_stem(activation: str, w_h: float) -> str:
    return f"analysis_{activation}_w_h_{w_h:g}"


def planned_names() -> list[str]:
    """Every file ``bptt demo`` may write (run() writes no other), so each is checked before the work."""
    module_stem = Path(MODULE_NAME).stem
    names = [DIRECTORY_MARKER, *(f"{DERIVATION_STEM}.{suffix}" for suffix in ("tex", "md", "pdf"))]
    names += [MODULE_NAME, f"check_{module_stem}.txt", f"check_{module_stem}.json"]
    for activation, w_h, _ in ANALYSES:
        names += [f"{_analysis_stem(activation, w_h)}.{suffix}" for suffix in ("txt", "json", "png")]
    names += ["training_notes.txt", "training_notes.json", "training_loss.png"]
    names += [f"{LSTM_ANALYSIS_STEM}.{suffix}" for suffix in ("txt", "json", "png")]
    names += [f"training_long_{cell}.{suffix}" for cell in ("lstm", "rnn") for suffix in ("txt", "json")]
    return [*names, "training_long.png", *REMEDIES_NAMES, "index.md"]


def _prepare(out: str | os.PathLike, force: bool = False) -> Path:
    """The target directory, checked before any work: not a file, nothing but regular files where the
    demo writes, and (unless ``force``) no file in it that bptt demo did not write or that was edited
    since (its manifest, DIRECTORY_MARKER, holds each file's hash). Nothing is created yet."""
    directory = Path(out)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file: give a directory for --out")
    for name in planned_names() if directory.is_dir() else ():
        kind = non_regular(directory / name)
        if kind is not None:  # refused now, not after minutes of work when the file is due
            raise UsageError(
                f"{directory / name} is a {kind} where bptt demo writes a file: remove it or choose another --out"
            )
    if directory.is_dir() and not force:
        _refuse_foreign(directory)
    if directory.is_dir() and not os.access(directory, os.W_OK):
        raise UsageError(f"{directory} is not writable: choose another --out")
    return directory


def _refuse_foreign(directory: Path) -> None:
    manifest = read_manifest(directory)
    if manifest is None and any(directory.iterdir()):
        raise UsageError(
            f"{directory} is not empty and was not made by bptt demo: pass --force to write the demo's "
            "files into it (other files are kept), or choose another --out"
        )
    for entry in sorted(directory.iterdir()):
        if entry.name != DIRECTORY_MARKER and manifest.get(entry.name) != file_hash(entry):
            raise UsageError(
                f"{entry} was not written by bptt demo or was edited since: pass --force to replace the "
                "demo's files (other files are kept), or choose another --out"
            )


def file_hash(path: Path) -> str | None:
    """SHA-256 of a regular file (not followed through a link); None for anything else."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def read_manifest(directory: Path) -> dict[str, str] | None:
    """name → SHA-256 of each file an earlier bptt demo wrote there; None when it made no manifest."""
    path = directory / DIRECTORY_MARKER
    if file_hash(path) is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not lines[0].startswith(f"{MARKER} demo"):
        return None
    manifest = {}
    for line in lines[1:]:
        digest, _, name = line.partition("  ")
        if len(digest) == 64 and name and "/" not in name:
            manifest[name] = digest
    return manifest


def _manifest_text(directory: Path, names) -> str:
    lines = [f"{MARKER} demo: this directory may be rewritten by it; each file it wrote and its SHA-256:"]
    lines += [f"{file_hash(directory / name)}  {name}" for name in sorted(names)]
    return "\n".join(lines) + "\n"


def _staging(directory: Path) -> Path:
    """An empty folder beside the target (same file system, so its files are renamed into place)."""
    parent = directory.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{directory.name[:48]}.bptt-demo-", dir=parent))
    except OSError as error:
        raise UsageError(
            f"cannot create a temporary folder beside {directory} (in {parent}): {error.strerror}: choose another --out"
        ) from None


def _install(staging: Path, directory: Path, names: list[str]) -> None:
    """Move the finished demo into ``directory``: the whole folder when there is none yet, else file by
    file (an earlier demo's files that this run did not write again are removed), the manifest last.
    Signals wait until it is done, so an interrupt leaves the old demo or the new one, never a mix."""
    write_atomic(staging / DIRECTORY_MARKER, _manifest_text(staging, names))
    with deferred_signals():
        if not directory.exists():
            try:
                mask = os.umask(0o022)
                os.umask(mask)
                os.chmod(staging, 0o777 & ~mask)  # as mkdir would make it (mkdtemp's is private)
                os.rename(staging, directory)
                return
            except OSError as error:
                raise UsageError(f"cannot create {directory}: {error.strerror}: choose another --out") from None
        old = read_manifest(directory) or {}
        try:
            for name in names:
                os.replace(staging / name, directory / name)
            for name, digest in old.items():
                if name not in names and file_hash(directory / name) == digest:
                    (directory / name).unlink()
            os.replace(staging / DIRECTORY_MARKER, directory / DIRECTORY_MARKER)
            staging.rmdir()
        except OSError as error:
            raise UsageError(f"cannot move the demo into {directory}: {error.strerror}: choose another --out") from None


def _header(text: str) -> str:
    return f"{MARKER} demo. {text}\n\n"


def _pdf(tex_path: Path) -> tuple[Path | None, str]:
    """Compile ``tex_path`` with pdflatex in a scratch directory; (pdf or None, note)."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        return None, "no PDF: pdflatex is not on PATH"
    with tempfile.TemporaryDirectory(prefix="bptt-demo-") as scratch:
        source = Path(scratch) / tex_path.name
        shutil.copyfile(tex_path, source)
        try:
            run = subprocess.run(
                [pdflatex, "-interaction=nonstopmode", "-halt-on-error", source.name],
                check=False,
                cwd=scratch,
                capture_output=True,
                timeout=PDFLATEX_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return None, f"no PDF: pdflatex took longer than {PDFLATEX_TIMEOUT} s"
        pdf = source.with_suffix(".pdf")
        if run.returncode != 0 or not pdf.exists():
            lines = run.stdout.decode("utf-8", "replace").splitlines()
            first_error = next((line for line in lines if line.startswith("!")), f"exit {run.returncode}")
            return None, f"no PDF: pdflatex failed ({first_error})"
        target = tex_path.with_suffix(".pdf")
        write_atomic(target, pdf.read_bytes())
        return target, "the derivation typeset by pdflatex"


def _check(module_path: Path) -> tuple[str, str, int]:
    """``bptt check FILE`` as a user would run it, as text and as JSON (both runs in parallel)."""
    # Run beside the module with its bare name, so the report names it as a reader would.
    command = [sys.executable, "-m", "symbolic", "check", module_path.name]
    environment = dict(os.environ)
    # The child must import this very package, also when it is run from a checkout.
    package_root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    environment["PYTHONIOENCODING"] = "utf-8"  # the report goes into a UTF-8 file, symbols and all
    runs = [
        subprocess.Popen(
            command + extra,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            cwd=module_path.parent,
        )
        for extra in ([], ["--json"])
    ]
    outputs = []
    for run in runs:
        try:
            stdout, stderr = run.communicate(timeout=CHECK_TIMEOUT)
        except BaseException:  # a time-out or an interrupt: neither check outlives the demo
            for child in runs:
                child.kill()
                child.communicate()
            raise
        outputs.append(
            (stdout.decode("utf-8", "replace") + stderr.decode("utf-8", "replace"), run.returncode)
        )
    (text, code), (as_json, _) = outputs
    return text, as_json, code


def run(out: str | os.PathLike = "bptt-demo", stream=None, force: bool = False) -> list[Written]:
    """Write the demo into ``out`` and print what was written; returns the list (paths in ``out``).

    Everything is built in a folder beside ``out`` and moved in at the end (_install), so an
    interrupted or failing run leaves ``out`` as it was; ``force`` writes into a directory that holds
    other files (they are kept) or demo files edited since (they are replaced)."""
    from ..study import analysis

    stream = stream or sys.stdout
    analysis.pyplot("bptt demo (its plots)")  # fail early, in one line, without matplotlib
    directory = _prepare(out, force)
    real = Path(os.path.realpath(directory))  # '.', '..' and a link to a directory have a real name
    staging = _staging(real)
    try:
        with signals_interrupt():
            written, notes = _build(staging)
            _install(staging, real, [item.path.name for item in written])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = [Written(directory / item.path.name, item.what) for item in written]
    print(f"bptt demo wrote {len(written)} files to {directory}:", file=stream)
    width = max(len(item.path.name) for item in written)
    for item in written:
        print(f"  {item.path.name:<{width}}  {item.what}", file=stream)
    for line in notes:
        print(f"  ({line})", file=stream)
    return written


#: The demo's stages, for its progress lines on stderr (about 6 s in all and the remedies' 30 s of
#: training; stdout lists the files).
STAGES = 5


def _progress(stage: int, what: str) -> None:
    print(f"bptt demo: {stage}/{STAGES} {what}…", file=sys.stderr, flush=True)


def _build(directory: Path) -> tuple[list[Written], list[str]]:
    """Every file of the demo, written into ``directory`` (the staging folder); (written, notes)."""
    from ..codegen import generate
    from ..model import Model
    from ..notes.derive import Derivation
    from ..typeset.notes import sigma_pi_document

    written: list[Written] = []

    planned = set(planned_names())

    def target(name: str) -> Path:
        assert name in planned, name  # planned_names() must list it, or _prepare did not check it
        return directory / name

    def write(name: str, content, what: str) -> Path:
        path = target(name)
        write_atomic(path, content)
        written.append(Written(path, what))
        return path

    # 1. The derivation.
    _progress(1, "the derivation (LaTeX, Markdown, PDF)")
    model = Model(steps=STEPS, activation=ACTIVATION)
    derivation = Derivation(model)
    stem = DERIVATION_STEM
    tex = write(f"{stem}.tex", sigma_pi_document(derivation, "tex"), "the derivation as a LaTeX document")
    write(f"{stem}.md", sigma_pi_document(derivation, "md"), "the derivation as Markdown (KaTeX math)")
    pdf, note = _pdf(tex)
    notes = []
    if pdf is not None:
        written.append(Written(pdf, note))
    else:
        notes.append(note)

    # 2. The generated module and its check.
    _progress(2, "the generated module and its gradient check")
    module_name = MODULE_NAME
    module_path = write(
        module_name,
        generate(model, mode="unrolled", output=module_name),
        "the generated NumPy module: forward, loss, loss_and_grad, bptt_terms",
    )
    check_text, check_json, check_code = _check(module_path)
    verdict = "passed" if check_code == 0 else f"FAILED (exit {check_code})"
    write(
        f"check_{module_path.stem}.txt",
        _header(f"Command: bptt check {module_name}") + check_text,
        f"its gradient check, {verdict}",
    )
    write(f"check_{module_path.stem}.json", check_json, "the check report as JSON")

    # 3. The analyses, 4. training on the notes' sentences.
    _progress(3, "the vanishing and exploding analyses, training on the notes' sentences")
    words = _analyses_and_training(write, target, written)

    # 5. The LSTM against the plain RNN.
    _progress(4, "the LSTM against the plain RNN")
    story = _lstm_comparison(write, target, written, words)

    # 6. The remedies.
    _progress(5, "the notes' remedies side by side (bptt remedies, about 30 s)")
    _remedies(write, target, written)

    # 7. The index.
    write("index.md", _index(written, notes, story), "this list, with the plots shown")
    return written, notes


def _analyses_and_training(write, target, written: list[Written]) -> list[str]:
    """The tanh and ReLU analyses of 20 random words, and training on the notes' sentences; returns the
    words (the LSTM's analysis reads the same)."""
    from ..study import analysis, data, train

    words = analysis.random_words(ANALYSIS_STEPS, analysis.DEFAULT_SEED)
    for activation, w_h, expected in ANALYSES:
        result = analysis.analyze(activation=activation, w_h=w_h, words=words)
        stem = _analysis_stem(activation, w_h)
        command = f"bptt analyze --steps {ANALYSIS_STEPS} --activation {activation} --w-h {w_h:g}"
        write(
            f"{stem}.txt",
            _header(f"Command: {command}") + analysis.table(result),
            f"terms per gap, {activation} at w_h = {w_h:g}: {result.regime} (the notes: {expected})",
        )
        write(
            f"{stem}.json",
            json.dumps(result.as_json(), indent=2, ensure_ascii=False) + "\n",
            "the same measurements as JSON",
        )
        path = target(f"{stem}.png")
        analysis.plot(result, path)
        written.append(
            Written(path, f"log|term_j| against the gap with the bound (γ|w_h|)^gap = {w_h:g}^gap")
        )

    # 4. Training on the notes' sentences.
    config = train.Config()
    result = train.train(data.notes(), config)
    log = [_header("Command: bptt train"), train.summary(result), "\nepoch  loss before the epoch's update\n"]
    log += [f"{epoch:>5}  {loss:.6g}\n" for epoch, loss in enumerate(result.loss, start=1)]
    log.append(f"{'after':>5}  {result.final_loss:.6g}\n")  # the loss the summary ends with
    write(
        "training_notes.txt",
        "".join(log),
        f"training log: accuracy {result.accuracy:.3f}, loss {result.final_loss:.4g} after {config.epochs} epochs",
    )
    write(
        "training_notes.json",
        json.dumps(result.as_json(), indent=2, ensure_ascii=False) + "\n",
        "the training run as JSON",
    )
    path = target("training_loss.png")
    train.plot(result, path)
    written.append(Written(path, "the loss curve"))
    return words


def _lstm_comparison(write, target, written: list[Written], words: list[str]) -> list[str]:
    """analyze --cell lstm on the analyses' words, and train --data long for the LSTM and the RNN;
    returns the index's paragraph about it."""
    from ..model import Model
    from ..study import cell_analysis, data, train
    from .common import derivation_for

    lstm = Model(cell="lstm")
    result = cell_analysis.analyze_cell(lstm, derivation_for(lstm), words=words)
    stem = LSTM_ANALYSIS_STEM
    command = f"bptt analyze --cell lstm --steps {len(words)}"
    write(
        f"{stem}.txt",
        _header(f"Command: {command}") + cell_analysis.table(result),
        "the LSTM's ‖∂c_n/∂c_j‖₂ and ‖∂h_n/∂h_j‖₂ per gap beside the tanh RNN's |Π ∂o_k/∂o_(k-1)|",
    )
    write(
        f"{stem}.json",
        json.dumps(result.as_json(), indent=2, ensure_ascii=False) + "\n",
        "the same measurements as JSON",
    )
    path = target(f"{stem}.png")
    cell_analysis.plot(result, path)
    written.append(Written(path, "the LSTM's cell path against the RNN's product, per gap (log scale)"))

    training, held_out = data.load("long")
    runs = {}
    compared = (
        ("lstm", "bptt train --cell lstm --data long", "LSTM (its defaults)"),
        ("rnn", "bptt train --data long", "tanh RNN (the defaults)"),
    )
    for cell, command, what in compared:
        config = train.Config(cell=cell)
        run = runs[cell] = train.train(training, config, held_out=held_out)
        write(
            f"training_long_{cell}.txt",
            _header(f"Command: {command}") + train.summary(run),
            f"{what} on --data long: held-out accuracy {run.accuracy:.3f} after {config.epochs} epochs",
        )
        write(
            f"training_long_{cell}.json",
            json.dumps(run.as_json(), indent=2, ensure_ascii=False) + "\n",
            "the training run as JSON",
        )
    path = target("training_long.png")
    train.plot_comparison({"LSTM": runs["lstm"], "tanh RNN": runs["rnn"]}, path)
    written.append(Written(path, "loss curves of both runs on --data long"))
    gap = result.steps - 1
    return [
        "## LSTM against the plain RNN",
        "",
        (
            f"On `--data long` (the label is the first of 50 words) the LSTM reaches held-out accuracy "
            f"{runs['lstm'].accuracy:.2f} with its defaults, the tanh RNN {runs['rnn'].accuracy:.2f}. "
            f"`bptt analyze --cell lstm` shows why: over {gap} steps the LSTM's cell path keeps "
            f"‖∂c_n/∂c_1‖₂ = {result.norms('c')[0]:.3g} (the carousel Π f alone "
            f"{result.norms('direct_c')[0]:.3g}), where the RNN's product has fallen to "
            f"{10 ** result.rnn_log10[0]:.3g}."
        ),
        "",
    ]


def _remedies(write, target, written: list[Written]) -> None:
    """``bptt remedies -o remedies.png``: every remedy of the notes, 5 seeds a row, table and plot."""
    from ..study import data, remedies

    training, held_out = data.load("long")
    results = remedies.run(training, held_out)
    write(
        "remedies.txt",
        _header("Command: bptt remedies -o remedies.png") + remedies.table(results, "long", remedies.SEEDS),
        "the notes' remedies for vanishing and exploding gradients, trained side by side over 5 seeds",
    )
    path = target("remedies.png")
    remedies.plot(results, path, "long", remedies.SEEDS)
    written.append(Written(path, "held-out accuracy per remedy and seed"))


def _index(written: list[Written], notes: list[str], story: list[str] = ()) -> str:
    lines = [f"<!-- {MARKER} demo. Do not edit: run bptt demo again. -->", "", "# bptt demo", ""]
    lines.append("The notes' many-to-one RNN, from the derivation to training. Files:")
    lines.append("")
    for item in written:
        lines.append(f"- [`{item.path.name}`]({item.path.name}): {item.what}")
    lines += [f"- ({note})" for note in notes]
    lines.append("- `index.md`: this page")
    lines.append("")
    lines += list(story)
    for item in written:
        if item.path.suffix == ".png":
            lines += [f"## {item.path.stem}", "", f"![{item.what}]({item.path.name})", ""]
    return "\n".join(lines)
