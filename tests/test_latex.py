"""The typeset derivation: it compiles cleanly, its Markdown math renders, and its formulas are right.

pdflatex, pdftotext and node (with tests/js's katex) are required, not optional: tests/install-tools.sh
installs them. A missing tool fails these tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sympy as sp

from symbolic import derive
from symbolic.files import MARKER
from symbolic.typeset.notes import FORMATS, DerivationPrinter, InOrder, Typesetter, sigma_pi_document, summary

from .conftest import ACTIVATION_NAMES, ROOT, run_bptt

JS = ROOT / "tests" / "js"
GENERATED = ROOT / "generated"
COMPILE_CASES = [(activation, 3) for activation in ACTIVATION_NAMES] + [("tanh", 1), ("tanh", 50), ("tanh", 1000)]
KATEX_CASES = [(activation, 3) for activation in ACTIVATION_NAMES] + [("tanh", 50)]


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run tests/install-tools.sh (the LaTeX tests need it)"
    return path


def compile_pdf(tex: str, directory: Path) -> tuple[subprocess.CompletedProcess, str, str]:
    """pdflatex the source as CI does; return the run, the log and the PDF's text (pdftotext)."""
    source = directory / "doc.tex"
    source.write_text(tex, encoding="utf-8")
    run = subprocess.run(
        [_tool("pdflatex"), "-halt-on-error", "-interaction=nonstopmode", source.name],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False,
    )
    log = (directory / "doc.log").read_text(encoding="utf-8", errors="replace")
    pdf = directory / "doc.pdf"
    text = ""
    if pdf.exists():
        text = subprocess.run(
            [_tool("pdftotext"), str(pdf), "-"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    return run, log, text


def render_katex(markdown: str) -> subprocess.CompletedProcess:
    assert (JS / "node_modules" / "katex").is_dir(), (
        "npm's katex is not installed: run tests/install-tools.sh (npm install --prefix tests/js)"
    )
    return subprocess.run(
        [_tool("node"), str(JS / "render_katex.js")], input=markdown, capture_output=True, text=True, timeout=120,
        check=False,
    )


# -- LaTeX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("activation", "steps"), COMPILE_CASES)
def test_tex_compiles_without_overfull_lines_and_reads(tmp_path, activation, steps):
    run, log, text = compile_pdf(sigma_pi_document(derive(steps, activation), "tex"), tmp_path)
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    words = " ".join(text.split())
    for expected in ("Backpropagation through time", "recurrent neural network", "short-term",
                     "The local derivatives", "immediate partial derivative"):
        assert expected in words, expected
    if steps > 1:
        assert "long-term" in words
    if steps == 1000:
        assert "996 long-term terms" in words
        assert "not built" in words


@pytest.mark.parametrize("steps", [3, 8])
def test_no_display_is_split_across_pages(tmp_path, steps):
    """Each display stays on one page (pdftotext separates pages with a form feed): the three update
    rules together, and every term of each gradient's Σ/Π listing with its sum; and the unrolled rows
    write w_h o_(t−1) and w_o o_n in the model's order."""
    tex = sigma_pi_document(derive(steps, "tanh"), "tex")
    assert "allowdisplaybreaks" not in tex
    assert "+ w_h o_{1}" in tex and r"\sigma\left(w_o o_{" in tex and "o_{1} w_h" not in tex
    run, log, text = compile_pdf(tex, tmp_path)
    assert run.returncode == 0, log[-3000:]
    pages = text.split("\f")
    assert len(pages) > 2
    rules = [[page.count(f"{weight} ← ") for page in pages] for weight in ("wi", "wh", "wo")]
    assert all(max(counts) == 1 for counts in rules), rules
    assert len({counts.index(1) for counts in rules}) == 1, f"the update rules are split: {rules}"


def test_compile_check_catches_overfull_and_empty_output(tmp_path):
    """Negative control: a one-line sum too wide for the page is reported, as the tests above require."""
    too_wide = " + ".join(f"x_{{{index}}}" for index in range(200))
    tex = "\\documentclass{article}\n\\begin{document}\n\\[ " + too_wide + " \\]\n\\end{document}\n"
    run, log, _ = compile_pdf(tex, tmp_path)
    assert run.returncode == 0 and "Overfull \\hbox" in log
    run, log, text = compile_pdf("\\documentclass{article}\n\\begin{document}\n\\end{document}\n", tmp_path)
    assert run.returncode == 0 and "short-term" not in text


# -- Markdown and KaTeX --------------------------------------------------------------------------


@pytest.mark.parametrize(("activation", "steps"), KATEX_CASES)
def test_markdown_math_renders_with_katex(activation, steps):
    markdown = sigma_pi_document(derive(steps, activation), "md")
    result = render_katex(markdown)
    assert result.returncode == 0, result.stderr
    assert "rendered" in result.stdout
    assert "\\documentclass" not in markdown and "align*" not in markdown and "multline" not in markdown


def test_katex_rejects_broken_math():
    """Negative control: an unbalanced formula and an environment KaTeX lacks both fail the script."""
    for broken in ("$$\n\\frac{\\partial L}{\\partial w_h\n$$\n", "$$\n\\begin{multline}a \\\\ b\\end{multline}\n$$\n"):
        result = render_katex("Some text.\n\n" + broken)
        assert result.returncode != 0
        assert "KaTeX parse error" in result.stderr
    assert render_katex("no math here\n").returncode != 0


def test_summary_renders_with_katex():
    summaries = "\n\n".join(summary(derive(3, activation)) for activation in ACTIVATION_NAMES)
    assert summaries.count("$$") == 2 * len(ACTIVATION_NAMES)
    result = render_katex(summaries)
    assert result.returncode == 0, result.stderr


# -- the formulas --------------------------------------------------------------------------------

#: Hand-written: ∂o_k/∂o_{k−1}, ∂⁺o_j/∂w_h and ∂⁺o_j/∂w_{i,1}, with f′ written with the output.
LOCAL = {
    "tanh": (r"\left(1 - o_{k}^{2}\right) w_h", r"\left(1 - o_{j}^{2}\right) o_{j-1}",
             r"\left(1 - o_{j}^{2}\right) x_{j,1}"),
    "sigmoid": (r"o_{k} \left(1 - o_{k}\right) w_h", r"o_{j} \left(1 - o_{j}\right) o_{j-1}",
                r"o_{j} \left(1 - o_{j}\right) x_{j,1}"),
    "relu": (r"H\left(o_{k}\right) w_h", r"H\left(o_{j}\right) o_{j-1}", r"H\left(o_{j}\right) x_{j,1}"),
    "identity": ("w_h", "o_{j-1}", "x_{j,1}"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_local_derivatives_match_hand_written(activation, fmt):
    text = sigma_pi_document(derive(3, activation), fmt)
    jacobian, immediate_h, immediate_i = LOCAL[activation]
    assert r"\frac{\partial o_{k}}{\partial o_{k-1}} &= f'\left(a_{k}\right) w_h = " + jacobian + " \\\\" in text
    assert r"\frac{\partial^{+} o_{j}}{\partial w_h} &= f'\left(a_{j}\right) o_{j-1} = " + immediate_h in text
    assert r"\frac{\partial^{+} o_{j}}{\partial w_{i,1}} &= " + immediate_i in text
    # (∂L/∂ŷ)(∂ŷ/∂o_n) shown simplified as (ŷ − y) w_o, never SymPy's −w_o (y − ŷ).
    assert r"= \left(\hat{y} - y\right) w_o" in text
    assert r"\left(y - \hat{y}\right)" not in text


def test_local_derivative_printing_agrees_with_an_independent_expression():
    """The printed tanh Jacobian is the printer's reading of (1 − o_k²) w_h, built here from scratch."""
    o_k, w_h = sp.symbols("o_k w_h")
    printer = DerivationPrinter({o_k: "o_{k}", w_h: "w_h"})
    expected = printer.doprint(InOrder(sp.diff(sp.tanh(sp.Symbol("a")), sp.Symbol("a")).subs(
        sp.tanh(sp.Symbol("a")), o_k), w_h))
    assert expected == LOCAL["tanh"][0]
    assert printer.doprint(o_k * w_h - w_h) == r"o_{k} w_h - w_h"  # a sum leads with a positive term


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_substituted_terms_equal_the_derived_terms(activation):
    """The displayed factors, multiplied, are derivation.term(...) for every j and parameter."""
    derivation = derive(4, activation)
    typesetter = Typesetter(derivation)
    u = derivation.unrolled
    for term in derivation.terms():
        j = term.j
        factors = typesetter.substituted_factors("w_h", j, compress=False)
        product = sp.Mul(*(f.value if isinstance(f, InOrder) else f for f in factors))
        assert sp.expand(product.xreplace({typesetter.o_zero: 0}) - derivation.term("w_h", j)) == 0
        factors = typesetter.substituted_factors("w_i", j, compress=False)
        product = sp.Mul(*(f.value if isinstance(f, InOrder) else f for f in factors))
        x_vector = next(s for s in product.free_symbols if s.name == f"x_{j} (vector)")
        for component, x in enumerate(u.x[j - 1]):
            difference = product.xreplace({x_vector: x}) - derivation.term("w_i", j, component)
            assert sp.expand(difference) == 0


def test_terms_are_labelled_short_and_long_term():
    text = sigma_pi_document(derive(3, "tanh"), "tex")
    assert text.count(r"}_{\text{short-term}}") == 2  # one per hidden weight
    assert text.count(r"}_{\text{long-term}}") == 4
    assert r"\frac{\partial^{+} o_{1}}{\partial w_h}" in text  # the immediate partial, marked ∂⁺


def test_long_sums_list_first_three_and_last_terms():
    text = sigma_pi_document(derive(50, "tanh"), "tex")
    for j in (50, 49, 48, 1):
        assert rf"\frac{{\partial^{{+}} o_{{{j}}}}}{{\partial w_h}}" in text
    assert r"\frac{\partial^{+} o_{47}}{\partial w_h}" not in text
    assert r"\text{(46 long-term terms, } j = 47, \ldots, 2\text{)}" in text


def test_expanded_result_shown_small_sized_medium_left_out_large():
    assert r"u_{1} &= \tanh" in sigma_pi_document(derive(3, "tanh"), "tex")
    medium = sigma_pi_document(derive(6, "tanh"), "md")
    assert "u_{1} &=" not in medium and "operations for" in medium
    large = sigma_pi_document(derive(50, "tanh"), "md")
    assert "u_{1} &=" not in large and "not built" in large


# -- the command, determinism, speed -------------------------------------------------------------


def test_header_names_the_canonical_command(tmp_path):
    target = tmp_path / "out.md"
    result = run_bptt("derive", "-f", "md", "-a", "relu", "-o", str(target), "-n", "2", "--inputs", "2")
    assert result.returncode == 0, result.stderr
    head = target.read_text(encoding="utf-8").splitlines()[0]
    assert head == f"<!-- {MARKER}. Command: bptt derive --steps 2 --activation relu --inputs 2 --format md -->"
    assert sigma_pi_document(derive(2), "tex").startswith(f"% {MARKER}. Command: bptt derive --steps 2 --activation tanh --format tex\n")
    assert "% " + MARKER + ". Command: my command\n" in sigma_pi_document(derive(2), "tex", command="my command")


@pytest.mark.parametrize("fmt", FORMATS)
def test_committed_documents_are_regenerated_byte_for_byte(tmp_path, fmt):
    name = f"derivation_tanh_n3.{fmt}"
    target = tmp_path / name
    result = run_bptt("derive", "--steps", "3", "--activation", "tanh", "--format", fmt, "-o", str(target),
                      env={"PYTHONHASHSEED": "1" if fmt == "tex" else "2"})
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == (GENERATED / name).read_bytes(), (
        f"generated/{name} is stale: regenerate it with "
        f"python3 -m symbolic derive --steps 3 --activation tanh --format {fmt} -o generated/{name}"
    )


def test_thousand_steps_typeset_in_seconds():
    started = time.perf_counter()
    result = run_bptt("derive", "--steps", "1000")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 10, elapsed
    assert len(result.stdout) < 40_000


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        sigma_pi_document(derive(2), "html")
