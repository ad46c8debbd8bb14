"""bptt: Backpropagation Through Time derived exactly with SymPy, typeset, and generated as code.

    >>> import symbolic
    >>> derivation = symbolic.derive(steps=3, activation="tanh")
    >>> derivation.output_factor        # (∂L/∂ŷ)(∂ŷ/∂o_n), simplified by SymPy
    -w_o*(y - y_hat)
"""

from .derive import Derivation, derive
from .errors import UsageError
from .model import Model

__version__ = "0.1.0"
__all__ = ["Derivation", "Model", "UsageError", "__version__", "derive"]
