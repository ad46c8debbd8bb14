"""The matrix document (hidden size H > 1 or biases): it compiles, renders, says the right formulas,
and `bptt derive --verify` proves the matrix formulas for small sizes.

Expected LaTeX below is written out by hand, not taken from the printer, so a change in what the
printer emits (a wrong transpose, f′ and δ swapped, a lost factor) fails these tests.
"""

from __future__ import annotations

import time

import pytest

from symbolic.derive_matrix import MatrixDerivation
from symbolic.latex import document, matrix_command
from symbolic.proof import format_matrix_report, prove_matrix

from .conftest import ACTIVATION_NAMES, run_bptt
from .test_latex import compile_pdf, render_katex

COMPILE_CASES = [(hidden, bias, steps) for hidden in (2, 8) for bias in (False, True) for steps in (3, 100)]

DELTA_N = r"\boldsymbol{\delta}_{n} &= \left(\hat{y} - y\right) \mathbf{w}_{o}"
DELTA_T = (
    r"\boldsymbol{\delta}_{t} &= W_{h}^{T} \left(f'\left(\mathbf{a}_{t+1}\right) \odot "
    r"\boldsymbol{\delta}_{t+1}\right), \qquad t = n-1, \ldots, 1"
)
JACOBIAN = r"\frac{\partial \mathbf{o}_{k}}{\partial \mathbf{o}_{k-1}} &= \operatorname{diag}\left(f'\left(\mathbf{a}_{k}\right)\right) W_{h}"
PRODUCT = (
    r"\frac{\partial \mathbf{o}_{n}}{\partial \mathbf{o}_{t}} &= \prod_{k=t + 1}^{n} "
    r"\operatorname{diag}\left(f'\left(\mathbf{a}_{k}\right)\right) W_{h}"
)
DW_H = (
    r"\frac{\partial L}{\partial W_{h}} &= \sum_{t=1}^{n} \left(f'\left(\mathbf{a}_{t}\right) \odot "
    r"\boldsymbol{\delta}_{t}\right) \mathbf{o}_{t-1}^{T}"
)
DW_I = (
    r"\frac{\partial L}{\partial W_{i}} &= \sum_{t=1}^{n} \left(f'\left(\mathbf{a}_{t}\right) \odot "
    r"\boldsymbol{\delta}_{t}\right) \mathbf{x}_{t}^{T}"
)
BOUND = r"&\le \left(\gamma \sigma_{\max}\left(W_{h}\right)\right)^{n - j}"
#: f′ written with the output, elementwise, and the H = 1 factor of the notes.
LOCAL = {
    "tanh": (r"1 - o_{t,r}^{2}", r"\left(1 - o_{k}^{2}\right) w_{h}", "1"),
    "sigmoid": (r"o_{t,r} \left(1 - o_{t,r}\right)", r"o_{k} \left(1 - o_{k}\right) w_{h}", "4"),
    "relu": (r"H\left(o_{t,r}\right)", r"H\left(o_{k}\right) w_{h}", "1"),
    "identity": ("1", r"w_{h}", "1"),
}


def _elementwise_rows(steps: int, hidden: int, f_prime) -> list[str]:
    """δ_{n,r} = (ŷ − y) w_{o,r}; δ_{t,r} = Σ_c (W_h)_{c,r} f′(o_{t+1,c}) δ_{t+1,c}, by hand."""
    rows = [rf"\delta_{{{steps},{r}}} &= \left(\hat{{y}} - y\right) w_{{o,{r}}}" for r in range(1, hidden + 1)]
    for t in range(steps - 1, 0, -1):
        for r in range(1, hidden + 1):
            terms = [
                rf"\left(W_{{h}}\right)_{{{c},{r}}} {f_prime(t + 1, c)} \delta_{{{t + 1},{c}}}"
                for c in range(1, hidden + 1)
            ]
            rows.append(rf"\delta_{{{t},{r}}} &= " + " + ".join(terms))
    return rows


# -- compiling and rendering -------------------------------------------------------------------------


@pytest.mark.parametrize(("hidden", "bias", "steps"), COMPILE_CASES)
def test_matrix_tex_compiles_without_overfull_lines_and_reads(tmp_path, hidden, bias, steps):
    derivation = MatrixDerivation(steps, "tanh", hidden=hidden, inputs=3, bias=bias)
    run, log, text = compile_pdf(document(derivation, "tex"), tmp_path)
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    words = " ".join(text.split())
    for expected in ("Backpropagation through time for a hidden state of size H", "The backward recursion",
                     "elementwise (Hadamard) product", "Vanishing and exploding gradients",
                     "Pascanu, Mikolov and Bengio, 2013", "is sufficient for the long-term terms to vanish",
                     "is necessary for them to explode", f"H = {hidden}", f"n = {steps}"):
        assert expected in words, expected
    assert ("with biases" in words) == bias
    if hidden * steps <= 8:
        assert "these rows give the same" in words
    else:
        assert f"would have Hn = {hidden * steps} rows" in words


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_matrix_markdown_renders_with_katex(activation):
    pages = [document(MatrixDerivation(3, activation, hidden=2, inputs=2, bias=True), "md"),
             document(MatrixDerivation(100, activation, hidden=8, inputs=3), "md")]
    for page in pages:
        result = render_katex(page)
        assert result.returncode == 0, result.stderr
        assert "\\documentclass" not in page and "align*" not in page


# -- the formulas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_recursion_jacobian_product_and_gradients_are_written_right(activation):
    tex = document(MatrixDerivation(3, activation, hidden=2, inputs=2), "tex")
    f_prime, scalar_factor, threshold = LOCAL[activation]
    for expected in (DELTA_N, DELTA_T, JACOBIAN, PRODUCT, DW_H, DW_I, BOUND):
        assert expected in tex, expected
    assert rf"f'\left(a_{{t,r}}\right) &= {f_prime}" in tex
    assert rf"For $H = 1$ the Jacobian is the notes' scalar factor ${scalar_factor}$." in tex
    assert rf"< 1 / \gamma = {threshold}$ is sufficient" in tex
    assert rf"> 1 / \gamma = {threshold}$" in tex
    assert "b_{h}" not in tex and "b_{o}" not in tex


def test_elementwise_deltas_for_small_sizes():
    tex = document(MatrixDerivation(3, "tanh", hidden=2, inputs=2), "tex")
    rows = _elementwise_rows(3, 2, lambda t, c: rf"\left(1 - o_{{{t},{c}}}^{{2}}\right)")
    assert "\n".join(row + r" \\" for row in rows[:-1]) + "\n" + rows[-1] + "\n" in tex
    tex = document(MatrixDerivation(2, "sigmoid", hidden=4, inputs=1), "tex")
    rows = _elementwise_rows(2, 4, lambda t, c: rf"o_{{{t},{c}}} \left(1 - o_{{{t},{c}}}\right)")
    assert all(row in tex for row in rows)
    # Negative control: the transposed index (W_h)_{r,c} instead of (W_h)_{c,r} is not what is printed.
    wrong = r"\delta_{1,1} &= \left(W_{h}\right)_{1,1} o_{2,1} \left(1 - o_{2,1}\right) \delta_{2,1} + \left(W_{h}\right)_{1,2}"
    assert wrong not in tex


def test_biases_are_in_the_model_and_the_gradients():
    tex = document(MatrixDerivation(3, "tanh", hidden=2, inputs=2, bias=True), "tex")
    assert r"W_{i} \mathbf{x}_{t} + W_{h} \mathbf{o}_{t-1} + \mathbf{b}_{h}" in tex
    assert r"\sigma\left(\mathbf{w}_{o}^{T} \mathbf{o}_{n} + b_{o}\right)" in tex
    assert (r"\frac{\partial L}{\partial \mathbf{b}_{h}} &= \sum_{t=1}^{n} f'\left(\mathbf{a}_{t}\right) \odot "
            r"\boldsymbol{\delta}_{t}") in tex
    assert r"\frac{\partial L}{\partial b_{o}} &= \hat{y} - y" in tex


def test_header_names_the_canonical_command():
    derivation = MatrixDerivation(5, "relu", hidden=4, inputs=3, bias=True)
    assert matrix_command(derivation, "md") == "bptt derive --steps 5 --activation relu --hidden 4 --bias --format md"
    assert matrix_command(MatrixDerivation(3, "tanh", hidden=2, inputs=2), "tex") == (
        "bptt derive --steps 3 --activation tanh --hidden 2 --inputs 2 --format tex"
    )
    result = run_bptt("derive", "-f", "md", "--bias", "--hidden", "4", "--activation", "relu", "--steps", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "<!-- Generated by bptt. Command: bptt derive --steps 5 --activation relu --hidden 4 --bias --format md -->"
    )


def test_large_sizes_print_the_formulas_quickly():
    start = time.perf_counter()
    result = run_bptt("derive", "--hidden", "128", "--steps", "1000")
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - start < 30
    assert DELTA_T in result.stdout and PRODUCT in result.stdout
    assert "would have $H n = 128000$ rows" in result.stdout


def test_bytes_identical_across_hash_seeds():
    args = ("derive", "--hidden", "2", "--inputs", "2", "--steps", "3", "--bias", "--format", "md")
    outputs = [run_bptt(*args, env={"PYTHONHASHSEED": seed}) for seed in ("1", "2024")]
    assert all(result.returncode == 0 for result in outputs)
    assert outputs[0].stdout == outputs[1].stdout and outputs[0].stdout


# -- --verify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_verify_proves_the_matrix_formulas_for_small_sizes(activation):
    result = run_bptt("derive", "--hidden", "2", "--inputs", "2", "--steps", "3", "--activation", activation, "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "exact identity (n = 3, H = 2, D = 2): matrix formula − d(nested L)/dθ cancels to 0 for all 10 elements" in out
    assert "[ok  ] 60-digit evaluation (n = 3, H = 2, D = 2)" in out
    assert "PROVED: 3 of 3 checks hold" in out
    assert "\\documentclass" not in out  # --verify alone prints the report only


def test_verify_with_biases_and_a_larger_size():
    result = run_bptt("derive", "--hidden", "2", "--inputs", "2", "--steps", "3", "--bias", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact identity (n = 3, H = 2, D = 2, biases): matrix formula − d(nested L)/dθ cancels to 0 for all 13 elements" in result.stdout
    result = run_bptt("derive", "--hidden", "8", "--steps", "20", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exact identity (n = 20, H = 8, D = 3): not run: the nested loss is differentiated" in result.stdout
    assert "[ok  ] 60-digit evaluation (n = 20, H = 8, D = 3)" in result.stdout


def test_verify_reports_a_wrong_formula():
    """Negative control: the formulas without the term at gap 1 are rejected by both checks."""
    report = prove_matrix(MatrixDerivation(3, "tanh", hidden=2, inputs=2), drop_gap=1)
    text = format_matrix_report(report)
    assert not report.passed
    assert "DISAGREEMENT: 1 of 3 checks hold" in text
    assert text.count("[FAIL]") == 2
