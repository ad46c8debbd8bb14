"""RNN layers as objects, the style of "Deep Learning from Scratch 2" (TimeRNN: params and grads lists,
dh0 left in self.dh) and of layers that keep one attribute per gradient (self.dWx, …)."""
import numpy as np


class TimeRNN:
    def __init__(self, Wx, Wh, b):
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.dh = None

    def forward(self, xs, h0):
        Wx, Wh, b = self.params
        N, T, _ = xs.shape
        self.xs, self.hs = xs, np.empty((N, T + 1, Wh.shape[0]))
        self.hs[:, 0] = h0
        for t in range(T):
            self.hs[:, t + 1] = np.tanh(xs[:, t] @ Wx + self.hs[:, t] @ Wh + b)
        return self.hs[:, 1:]

    def backward(self, dhs):
        Wx, Wh, b = self.params
        dxs = np.empty_like(self.xs)
        dh = np.zeros_like(self.hs[:, 0])
        grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        for t in reversed(range(dhs.shape[1])):
            dt = (dhs[:, t] + dh) * (1 - self.hs[:, t + 1] ** 2)
            grads[0] += self.xs[:, t].T @ dt
            grads[1] += self.hs[:, t].T @ dt
            grads[2] += dt.sum(axis=0)
            dxs[:, t] = dt @ Wx.T
            dh = dt @ Wh.T
        for k, g in enumerate(grads):
            self.grads[k][...] = g
        self.dh = dh
        return dxs


class AttributeRNN(TimeRNN):
    """The same layer keeping layer.dWx, layer.dWh, layer.db; its backward returns (dx, dh0)."""

    def backward(self, dhs):
        dxs = super().backward(dhs)
        self.dWx, self.dWh, self.db = self.grads
        return dxs, self.dh


class NoCarryRNN(TimeRNN):
    """The no-carry bug in the layer style: dh is not added to the next step's upstream gradient."""

    def backward(self, dhs):
        Wx, Wh, b = self.params
        dxs = np.empty_like(self.xs)
        grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        for t in reversed(range(dhs.shape[1])):
            dt = dhs[:, t] * (1 - self.hs[:, t + 1] ** 2)
            grads[0] += self.xs[:, t].T @ dt
            grads[1] += self.hs[:, t].T @ dt
            grads[2] += dt.sum(axis=0)
            dxs[:, t] = dt @ Wx.T
            self.dh = dt @ Wh.T
        self.grads = grads
        return dxs
