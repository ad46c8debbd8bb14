"""The float64 version of rnn_loss_and_grad_float32.py with a loss of ½ · the mean BCE (and its gradients)."""
import numpy as np
import rnn_loss_and_grad_float32 as base

base.DTYPE = np.float64
base.HALF = True
loss_and_grad = base.loss_and_grad
