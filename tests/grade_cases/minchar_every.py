"""A character-level RNN in min-char-rnn's style, written here: column vectors, w_i (H, D) applied as
w_i @ x_t, a softmax and a cross-entropy term at every step, the loss summed over the steps; adapted to
a generated module's interface (``bptt codegen --readout every --loss softmax --bias``): x (B, n, D),
y (B, n) class indices, params a dict, the loss and the gradients averaged over the batch.

``loss_and_grad`` is right; ``loss_and_grad_no_carry`` forgets the gradient that step t + 1 sends back
(min-char-rnn's ``dhnext``), so each step's δ comes from its own loss alone; ``loss_and_grad_no_target``
forgets to subtract 1 at the target class; ``loss_and_grad_last_only`` is the many-to-one model (the loss
of the last step alone), right for its own loss and wrong for this one."""

import numpy as np


def _sequence(xs, targets, p, carry=True, target=True, last_only=False):
    """Loss and gradients of one sequence; xs (n, D), targets (n,)."""
    w_i, w_h, w_o, b_h, b_o = p["w_i"], p["w_h"], p["w_o"], p["b_h"], p["b_o"]
    hidden = w_h.shape[0]
    h = {-1: np.zeros((hidden, 1))}
    probabilities = {}
    loss = 0.0
    for t in range(len(xs)):
        column = xs[t].reshape(-1, 1)
        h[t] = np.tanh(w_i @ column + w_h @ h[t - 1] + b_h.reshape(-1, 1))
        scores = w_o @ h[t] + b_o.reshape(-1, 1)
        shifted = np.exp(scores - scores.max())
        probabilities[t] = shifted / shifted.sum()
        if not last_only or t == len(xs) - 1:
            loss -= np.log(probabilities[t][targets[t], 0])
    grads = {name: np.zeros_like(value) for name, value in p.items()}
    from_later = np.zeros((hidden, 1))
    for t in reversed(range(len(xs))):
        error = probabilities[t].copy()
        if target:
            error[targets[t]] -= 1
        if last_only and t < len(xs) - 1:
            error[:] = 0
        grads["w_o"] += error @ h[t].T
        grads["b_o"] += error[:, 0]
        through_h = w_o.T @ error + (from_later if carry else 0)
        raw = (1 - h[t] ** 2) * through_h
        grads["b_h"] += raw[:, 0]
        grads["w_i"] += raw @ xs[t].reshape(1, -1)
        grads["w_h"] += raw @ h[t - 1].T
        from_later = w_h.T @ raw
    return loss, grads


def _batch(x, y, params, **mistake):
    p = {name: np.asarray(value, dtype=float) for name, value in params.items()}
    results = [_sequence(np.asarray(x[b], float), np.asarray(y[b]), p, **mistake) for b in range(len(x))]
    loss = np.mean([loss for loss, _ in results])
    return loss, {name: np.mean([g[name] for _, g in results], axis=0) for name in p}


def loss_and_grad(x, y, params):
    return _batch(x, y, params)


def loss_and_grad_no_carry(x, y, params):
    return _batch(x, y, params, carry=False)


def loss_and_grad_no_target(x, y, params):
    return _batch(x, y, params, target=False)


def loss_and_grad_last_only(x, y, params):
    return _batch(x, y, params, last_only=True)


def loss_and_grad_one_sequence(xs, targets, params):
    """One sequence as min-char-rnn takes it: xs (n, D), targets (n,) (graded with --unbatched)."""
    p = {name: np.asarray(value, dtype=float) for name, value in params.items()}
    return _sequence(np.asarray(xs, float), np.asarray(targets), p)
