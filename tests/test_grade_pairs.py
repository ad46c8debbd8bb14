"""bptt grade on the code people write: CS231n-shaped forward/backward pairs, layouts, one sequence at a
time, float32, a constant factor, clipping, copies (issue 26).

The graded implementations (tests/grade_cases/) are written by hand in the style of course code; the
reference is the engine's vector–Jacobian product, itself checked here against torch autograd."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from symbolic.verify.grade_pairs import grade_layer, grade_pair

CASES = Path(__file__).parent / "grade_cases"
sys.path.insert(0, str(CASES))

import lstm_cs231n as lstm
import rnn_cs231n as rnn


def bptt(*args):
    return subprocess.run([sys.executable, "-m", "symbolic", "grade", *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=600)


def test_vjp_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    from symbolic.cells import lstm as lstm_cell
    from symbolic.engine.derivation import derive_cell
    from symbolic.engine.vjp import vjp

    d = derive_cell(lstm_cell.cell())
    rng = np.random.default_rng(1)
    B, n, D, H = 2, 5, 3, 3
    p = {k: rng.normal(0, 0.6, s) for k, s in d.shapes(H, D).items()}
    x, G, h0 = rng.normal(size=(B, n, D)), rng.normal(size=(B, n, H)), rng.normal(size=(B, H))
    values = vjp(d, p, x, G, {"h": h0})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx, th0 = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    h, c, hs = th0, torch.zeros(B, H, dtype=torch.float64), []
    for step in range(n):
        a = {g: tx[:, step] @ t[f"W_{g}"].T + h @ t[f"U_{g}"].T + t[f"b_{g}"] for g in "ifgo"}
        c = torch.sigmoid(a["f"]) * c + torch.sigmoid(a["i"]) * torch.tanh(a["g"])
        h = torch.sigmoid(a["o"]) * torch.tanh(c)
        hs.append(h)
    (torch.stack(hs, 1) * torch.tensor(G)).sum().backward()
    for name in ("W_f", "U_o", "b_g"):
        assert np.allclose(values.gradients[name], t[name].grad.numpy(), rtol=1e-12, atol=1e-12)
    assert np.allclose(values.gradients["x"], tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert np.allclose(values.gradients["h_0"], th0.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_cs231n_rnn_pair_right_and_the_no_carry_bug_named():
    right = bptt(CASES / "rnn_cs231n.py", "--forward", "rnn_forward", "--backward", "rnn_backward", "--layout", "row")
    assert right.returncode == 0, right.stdout + right.stderr
    assert "right: every entry" in right.stdout
    wrong = bptt(CASES / "rnn_cs231n.py", "--forward", "rnn_forward", "--backward", "rnn_backward_no_carry")
    assert wrong.returncode == 1
    assert "the mistake: truncated" in wrong.stdout and "wrong from n = 2" in wrong.stdout


def test_cs231n_lstm_pair_with_its_gate_order():
    right = bptt(CASES / "lstm_cs231n.py", "--forward", "lstm_forward", "--backward", "lstm_backward",
                 "--layout", "row", "--cell", "lstm", "--gates", "ifog")
    assert right.returncode == 0, right.stdout + right.stderr
    # declared in torch's order, the forward's own order is found and named
    declared = bptt(CASES / "lstm_cs231n.py", "--forward", "lstm_forward", "--backward", "lstm_backward",
                    "--cell", "lstm", "--gates", "ifgo")
    assert declared.returncode == 1
    assert "reads the stacked gates as ifog" in declared.stdout


def test_lstm_backward_gate_order_and_copied_bias_named():
    swapped = grade_pair(lstm.lstm_forward, lstm.lstm_backward_gates_swapped, cell="lstm", gates="ifog")
    assert not swapped.passed and "stacks the gate gradients as ifgo" in swapped.diagnosis
    copied = grade_pair(lstm.lstm_forward, lstm.lstm_backward_copied_bias, cell="lstm", gates="ifog")
    assert not copied.passed and "∂L/∂db[i] is returned as a copy of ∂L/∂db[f]" in copied.diagnosis


def test_float32_is_right_formula_and_a_1e6_error_in_float64_is_wrong():
    report = grade_pair(rnn.rnn_forward_float32, rnn.rnn_backward_float32, cell="rnn")
    assert report.passed and report.precision == "float32"
    assert "right formula, float32 precision" in report.format()
    strict = grade_pair(rnn.rnn_forward_float32, rnn.rnn_backward_float32, cell="rnn", strict=True)
    assert not strict.passed and "float32 precision" in strict.localisation
    assert "batch" not in strict.localisation and "long-term" not in strict.localisation
    # negative control: float64 with a 1e-6 error in one term stays wrong, and is not called float32
    off = grade_pair(rnn.rnn_forward, rnn.rnn_backward_off_1e6, cell="rnn")
    assert not off.passed and off.precision is None
    assert [f.parameter for f in off.findings if not f.right] == ["dWh"]


def test_constant_factor_and_clipping_named():
    half = grade_pair(rnn.rnn_forward, rnn.rnn_backward_half, cell="rnn")
    assert not half.passed and "½ × the exact one" in half.diagnosis
    clipped = grade_pair(rnn.rnn_forward, rnn.rnn_backward_clipped, cell="rnn")
    assert not clipped.passed and "clipped to ±0.5" in clipped.diagnosis


def test_unbatched_pair():
    assert grade_pair(rnn.rnn_forward_one, rnn.rnn_backward_one, cell="rnn", unbatched=True).passed
    # negative control: the one-sequence wrapper of the no-carry bug
    def no_carry_one(dh, cache):
        dx, dh0, dWx, dWh, db = rnn.rnn_backward_no_carry(dh[np.newaxis], cache)
        return dx[0], dh0[0], dWx, dWh, db

    report = grade_pair(rnn.rnn_forward_one, no_carry_one, cell="rnn", unbatched=True)
    assert not report.passed and report.mistake == "truncated"


def test_loss_and_grad_in_float32_and_a_half_loss():
    f32 = bptt(CASES / "rnn_loss_and_grad_float32.py", "--hidden", "3")
    assert f32.returncode == 0, f32.stdout + f32.stderr
    assert "right formula, float32 precision" in f32.stdout and "batch" not in f32.stdout.split("\n\n")[-1]
    assert bptt(CASES / "rnn_loss_and_grad_float32.py", "--hidden", "3", "--strict").returncode == 1
    half = bptt(CASES / "rnn_loss_and_grad_half.py", "--hidden", "3")
    assert half.returncode == 1 and "½ × the exact one" in half.stdout
    assert "forward pass is not" not in half.stdout


@pytest.mark.parametrize("flags, words", [
    (["--forward", "rnn_forward"], "--forward and --backward go together"),
    (["--forward", "rnn_forward", "--backward", "rnn_backward", "--layout", "diagonal"], "--layout diagonal"),
    (["--forward", "lstm_forward", "--backward", "lstm_backward", "--cell", "lstm", "--gates", "ifx"], "--gates ifx"),
    (["--forward", "rnn_forward", "--backward", "rnn_backward", "--params", "Wx,Q"], "--params Wx,Q"),
    (["--forward", "rnn_forward", "--backward", "nothing_here"], "no function nothing_here"),
    (["--gates", "ifog"], "--gates declares the weights of a forward/backward pair"),
    (["--forward", "rnn_forward", "--backward", "rnn_backward", "--steps", "3"], "drop --steps"),
    (["--forward", "rnn_forward", "--backward", "rnn_backward", "--seed", "-1"], "--seed must be"),
    (["--forward", "lstm_forward", "--backward", "lstm_backward", "--cell", "lstm", "--params", "Wx,Wh"],
     "has a bias"),
])
def test_bad_flags_one_line_exit_2(flags, words):
    path = CASES / ("lstm_cs231n.py" if "lstm_forward" in flags else "rnn_cs231n.py")
    result = bptt(path, *flags)
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_min_char_rnn_columns_one_sequence():
    assert grade_pair(rnn.min_char_forward, rnn.min_char_backward, cell="rnn", layout="column", unbatched=True).passed
    # negative control: declared row, the column code is graded wrong (or cannot be called)
    from symbolic.verify.grade import FunctionUnusable

    try:
        report = grade_pair(rnn.min_char_forward, rnn.min_char_backward, cell="rnn", layout="row", unbatched=True)
        assert not report.passed
    except FunctionUnusable:
        pass


def test_layer_objects_with_gradients_as_attributes():
    import rnn_layers

    assert grade_layer(rnn_layers.TimeRNN, grads_from="layer.grads").passed
    assert grade_layer(rnn_layers.AttributeRNN, grads_from="layer.d{}").passed
    wrong = grade_layer(rnn_layers.NoCarryRNN, grads_from="grads", cell="rnn")
    assert not wrong.passed and wrong.mistake == "truncated"
    cli = bptt(CASES / "rnn_layers.py", "--layer", "AttributeRNN", "--grads-from", "layer.d{}")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert bptt(CASES / "rnn_layers.py", "--layer", "NoCarryRNN", "--grads-from", "layer.grads").returncode == 1
    bad = bptt(CASES / "rnn_layers.py", "--grads-from", "grads")
    assert bad.returncode == 2 and "--layer CLASS" in bad.stderr


def test_torch_conventions_split_bias_and_concatenation():
    import torch_style

    lstm_torch = grade_pair(torch_style.lstm_forward, torch_style.lstm_backward, cell="lstm", layout="column",
                            params="Wx,Wh,bx,bh")
    assert lstm_torch.passed, lstm_torch.format()
    assert grade_pair(torch_style.rnn_concat_forward, torch_style.rnn_concat_backward, cell="rnn",
                      params="W,b", concat="hx").passed
    # negative controls: the other concatenation, and the row layout, are not passed
    other = grade_pair(torch_style.rnn_concat_forward, torch_style.rnn_concat_backward, cell="rnn",
                       params="W,b", concat="xh")
    assert not other.passed and "--concat hx" in other.diagnosis
    from symbolic.verify.grade import FunctionUnusable

    with pytest.raises(FunctionUnusable):
        grade_pair(torch_style.lstm_forward, torch_style.lstm_backward, cell="lstm", layout="row",
                   params="Wx,Wh,bx,bh")


def test_two_mistakes_and_norm_clipping_named():
    both = grade_pair(rnn.rnn_forward, rnn.rnn_backward_no_carry_half, cell="rnn")
    assert not both.passed and both.mistake == "truncated" and "½ × that one" in both.diagnosis
    norm = grade_pair(rnn.rnn_forward, rnn.rnn_backward_norm_clipped, cell="rnn")
    assert not norm.passed and "clipped by norm to 0.5" in norm.diagnosis and "the gradient is right" in norm.diagnosis


def test_loss_and_grad_clipped_and_copied_lstm_biases():
    clipped = bptt(CASES / "rnn_clipped.py", "--hidden", "3")
    assert clipped.returncode == 1 and "clipped to ±0.05" in clipped.stdout
    assert "long-term" not in clipped.stdout
    copied = bptt(CASES / "lstm_copied_biases.py", "--cell", "lstm")
    assert copied.returncode == 1
    assert "∂L/∂b_i is returned as a copy of ∂L/∂b_f; ∂L/∂b_o is returned as a copy of ∂L/∂b_f" in copied.stdout


def test_float32_arrays_through_the_sandbox_and_a_float32_mistake_is_not_passed():
    right = bptt(CASES / "rnn_cs231n.py", "--forward", "rnn_forward_pure32", "--backward", "rnn_backward_pure32")
    assert right.returncode == 0 and "right formula, float32 precision" in right.stdout
    wrong = bptt(CASES / "rnn_cs231n.py", "--forward", "rnn_forward_pure32", "--backward",
                 "rnn_backward_pure32_no_carry")
    assert wrong.returncode == 1 and "the mistake: truncated" in wrong.stdout and "within 1e-04" in wrong.stdout


def test_params_names_another_order():
    def forward(x, h0, Wh, b, Wx):  # the weights in another order than CS231n's
        return rnn.rnn_forward(x, h0, Wx, Wh, b)

    def backward(dh, cache):
        dx, dh0, dWx, dWh, db = rnn.rnn_backward(dh, cache)
        return dx, dh0, dWh, db, dWx

    assert grade_pair(forward, backward, cell="rnn", params="Wh,b,Wx").passed
    # negative control: graded in CS231n's order, the same pair is not passed
    from symbolic.verify.grade import FunctionUnusable

    try:
        assert not grade_pair(forward, backward, cell="rnn").passed
    except FunctionUnusable:  # b (H,) where Wx (D, H) belongs may not even broadcast
        pass


def test_loss_and_grad_of_one_sequence():
    right = bptt(CASES / "rnn_one_sequence.py", "--hidden", "3", "--unbatched")
    assert right.returncode == 0, right.stdout + right.stderr
    wrong = bptt(CASES / "rnn_one_sequence.py", "--hidden", "3", "--unbatched", "--function", "loss_and_grad_no_carry")
    assert wrong.returncode == 1 and "the mistake: truncated" in wrong.stdout
    batched = bptt(CASES / "rnn_one_sequence.py", "--hidden", "3")
    assert batched.returncode == 2 and "--unbatched" in batched.stderr


def test_a_small_forward_error_in_float64_is_not_taken_for_float32():
    """The negative control of the float32 evidence: values off by 1e-6, but following a move of the
    parameters far below float32's resolution as a float64 function does, stay wrong."""
    pair = grade_pair(rnn.rnn_forward_off_1e6, rnn.rnn_backward, cell="rnn")
    assert not pair.passed and pair.precision is None
    function = bptt(CASES / "rnn_loss_and_grad_float32.py", "--hidden", "3", "--function", "loss_and_grad_off_1e6")
    assert function.returncode == 1 and "float32 precision" not in function.stdout


def test_assert_bptt_pair():
    from symbolic.testing import assert_bptt_pair

    assert_bptt_pair(lstm.lstm_forward, lstm.lstm_backward, cell="lstm", gates="ifog")
    with pytest.raises(AssertionError, match="the mistake: truncated"):
        assert_bptt_pair(rnn.rnn_forward, rnn.rnn_backward_no_carry)
