"""An LSTM loss_and_grad (dict interface) whose ∂L/∂b_i and ∂L/∂b_o are copies of ∂L/∂b_f, the slip of
a student who pasted the forget gate's line (the formulas of tests/grading/lstm_right.py otherwise)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grading"))
import lstm_right

CELL = "lstm"


def loss_and_grad(x, y, params):
    loss, grads = lstm_right.loss_and_grad(x, y, params)
    grads = dict(grads)
    grads["b_i"] = grads["b_f"].copy()
    grads["b_o"] = grads["b_f"].copy()
    return loss, grads
