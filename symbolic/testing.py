"""Check a BPTT implementation from a test: one call, silent when right, the diagnosis when wrong.

    from symbolic.testing import assert_bptt
    from mymodel import loss_and_grad

    def test_my_bptt():
        assert_bptt(loss_and_grad)                       # the notes' RNN: tanh, H = 1
        assert_bptt(lstm_loss_and_grad, cell="lstm", hidden=4)
        assert_bptt_pair(rnn_forward, rnn_backward)      # CS231n's pair: dh at every step

``fn`` has a generated module's ``loss_and_grad`` interface: ``fn(x, y, w_i, w_h, w_o) -> (loss, dw_i,
dw_h, dw_o)`` for the plain RNN (w_i (D,), w_h and w_o numbers at H = 1; matrices for H > 1, and
``b_h=``, ``b_o=`` keywords with ``bias=True``), ``fn(x, y, params) -> (loss, grads)`` with dicts keyed
by parameter name for every cell; x is (B, n, D), y is (B,), and what it returns may be anything
``np.asarray`` takes. See ``symbolic.verify.grade`` for how it is graded.

``fn`` is called in the test's own process, with no time limit (``bptt grade FILE.py`` grades a file in
a child process with ``--timeout``); a function that calls ``sys.exit`` fails like one that raises.
"""

from __future__ import annotations

from .verify.grade import FunctionUnusable, grade_function
from .verify.grade_pairs import grade_pair


def assert_bptt(fn, cell="rnn", steps: int | None = None, hidden: int | None = None, activation: str = "tanh",
                bias: bool = False, inputs: int = 3, seed: int = 0, outputs=None) -> None:
    """Raise AssertionError, its message the diagnosis, unless ``fn``'s loss and gradients are exact.

    ``cell``: ``"rnn"``, ``"lstm"``, ``"gru"``, a cell file's path or a ``Cell``; ``steps``: None when
    fn takes any sequence length (it is graded at n = 1..8, 12 and 20, which localises a mistake in time), else
    the one length it takes; ``hidden``: None for grade's default (3; 1 for the plain RNN's positional
    form, the notes' scalars). A function that cannot be called as the interface says (wrong signature,
    it raises, it returns something else) fails too, its own exception chained; options that make no
    sense (an unknown cell, hidden=0) raise ``symbolic.UsageError``. ``outputs``: a
    ``symbolic.outputs.Outputs`` for a readout after every step (None: the notes' after the last).
    """
    __tracebackhide__ = True  # pytest: the failure points at the test's call
    try:
        report = grade_function(fn, cell=cell, steps=steps, hidden=hidden, activation=activation, bias=bias,
                                inputs=inputs, seed=seed, steps_hint="steps=N", outputs=outputs)
    except FunctionUnusable as error:
        raise AssertionError(f"cannot grade: {error}") from error.__cause__
    if not report.passed:
        raise AssertionError("\n" + report.format())


def assert_bptt_pair(forward, backward, **options) -> None:
    """Raise AssertionError, its message the diagnosis, unless the pair ``forward(x, h0, *weights) -> (h,
    cache)``, ``backward(dh, cache) -> (dx, dh0, *weight gradients)`` is exact (float32's reach for one
    that computes in float32). ``options`` as ``symbolic.verify.grade_pairs.grade_pair`` takes them
    (cell, layout, gates, params, concat, hidden, inputs, activation, unbatched, seed, strict)."""
    __tracebackhide__ = True  # pytest: the failure points at the test's call
    try:
        report = grade_pair(forward, backward, **options)
    except FunctionUnusable as error:
        raise AssertionError(f"cannot grade: {error}") from error.__cause__
    if not report.passed:
        raise AssertionError("\n" + report.format())


__all__ = ["assert_bptt", "assert_bptt_pair"]
