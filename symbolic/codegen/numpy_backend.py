"""The NumPy backend: a SymPy code printer and the plain context for ``templates/numpy``.

Every expression in the generated module is printed by SymPy from the derivation:

* the forward step o_t = f(w_i·x_t + w_h o_{t−1}) from the unrolled definitions (unrolled mode) or
  the one generic step (loop mode), with the input projection w_i·x_t hoisted out of the recursion;
* f′(a_t) written with the stored output o_t, ∂o_k/∂o_{k−1} and ∂⁺o_j/∂w from
  ``derivation.step_derivative``, ``step_jacobian`` and ``step_immediate``;
* (∂L/∂ŷ)(∂ŷ/∂o_n) and ∂L/∂w_o from ``derivation.output_factor`` and ``dL_dw_o``.

For wide batches the forward step also has an in-place form (``in_place``): o_t starts as
w_i·x_t, gets w_h o_{t−1} added and f applied where it lies (``np.tanh(o_t, out=o_t)``).

The structure of the Σ/Π formula shapes the code: δ_j = (∂L/∂ŷ)(∂ŷ/∂o_n) Π_{k=j+1..n} ∂o_k/∂o_{k−1}
is a suffix (reversed cumulative) product, so the backward pass needs no Python loop, and each
immediate partial is factored as f′(a_t) times what multiplies it, so both weights share one
array δ_j f′(a_j).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import precedence

from ..activations import Activation, relu
from ..notes.derive import Derivation


class NumPyCodePrinter(NumPyPrinter):
    """SymPy's NumPy printer writing ``np.``, with our activations and the step function."""

    def __init__(self, settings=None):
        super().__init__({"fully_qualified_modules": True, **(settings or {})})

    def _module_format(self, fqn, register=True):
        # The generated module imports NumPy once, as np.
        module, _, name = fqn.rpartition(".")
        if module == "numpy":
            return f"np.{name}"
        return super()._module_format(fqn, register)

    def _print_sigmoid(self, expr):
        # A helper of the generated module: exp of a non-positive real part only, so no overflow.
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_relu(self, expr):
        return f"np.maximum({self._print(expr.args[0])}, 0.0)"

    def _print_Heaviside(self, expr):
        value, at_zero = expr.args if len(expr.args) == 2 else (expr.args[0], sp.S.Half)
        return f"np.heaviside({self._print(value)}, {self._print(sp.Float(at_zero))})"

    def _print_Float(self, expr):
        return repr(float(expr))

    # The layout ``ruff format`` gives: spaces around * and /, and around ** unless both operands
    # are simple (a name or a number), so the generated module is stable under the formatter.

    def _print_Rational(self, expr):
        return f"{expr.p} / {expr.q}"

    def _print_Mul(self, expr):
        coefficient, factors = expr.as_coeff_mul()
        sign = ""
        if coefficient.is_negative:
            sign, coefficient = "-", -coefficient
        numerator, denominator = [], []
        if coefficient != 1:
            numerator.extend([sp.Integer(coefficient.p)] if coefficient.is_Rational else [coefficient])
            if coefficient.is_Rational and coefficient.q != 1:
                denominator.append(sp.Integer(coefficient.q))
        for factor in sp.Mul.make_args(sp.Mul(*factors)) if factors else ():
            if factor.is_Pow and factor.exp.is_negative and factor.exp.is_Rational:
                denominator.append(factor.base**-factor.exp)
            else:
                numerator.append(factor)
        level = precedence(expr)
        top = " * ".join(self.parenthesize(f, level) for f in numerator) if numerator else "1"
        if not denominator:
            return sign + top
        if len(denominator) == 1:
            bottom = self.parenthesize(denominator[0], level + 1)
        else:
            bottom = "(" + " * ".join(self.parenthesize(f, level) for f in denominator) + ")"
        return f"{sign}{top} / {bottom}"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"np.sqrt({self._print(expr.base)})"
        if expr.exp.is_negative and expr.exp.is_Rational:
            return self._print_Mul(sp.Mul(expr, evaluate=False))
        level = precedence(expr)
        base = self.parenthesize(expr.base, level, strict=True)
        exponent = self.parenthesize(expr.exp, level, strict=False)
        simple = all((part.is_Symbol and str(part).isidentifier()) or (part.is_Integer and part >= 0)
                     for part in (expr.base, expr.exp))
        return f"{base}**{exponent}" if simple else f"{base} ** {exponent}"


_PRINTER = NumPyCodePrinter()


class InPlacePrinter(NumPyCodePrinter):
    """Prints f(o), for an activation f that is a NumPy ufunc, as the call writing f(o) over o."""

    #: The activations printed here; ``in_place`` assigns any other back into the array.
    ufuncs = (sp.tanh, relu)

    def _print_tanh(self, expr):
        target = self._print(expr.args[0])
        return f"np.tanh({target}, out={target})"

    def _print_relu(self, expr):
        target = self._print(expr.args[0])
        return f"np.maximum({target}, 0.0, out={target})"


_IN_PLACE_PRINTER = InPlacePrinter()


def code(expr: sp.Expr, names: dict | None = None) -> str:
    """Print ``expr`` as NumPy code, renaming symbols to the local variable names in ``names``."""
    if names:
        expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    return _PRINTER.doprint(expr)


def atom(expr: sp.Expr, names: dict | None = None) -> str:
    """Printed code safe to follow with ``.T`` or ``[…]``: parenthesized unless a bare name."""
    printed = code(expr, names)
    return printed if printed.isidentifier() else f"({printed})"


def in_place(activation: Activation, target: str, printer: NumPyPrinter | None = None) -> str | None:
    """The statement applying ``activation`` to the array named ``target`` where it lies, or None
    when f is the identity (nothing to do). ``printer`` prints an f that is no ufunc (the sigmoid
    helper) when the module names its helpers otherwise."""
    array = sp.Symbol(target)
    applied = activation.apply(array)
    if applied == array:
        return None
    if isinstance(applied, InPlacePrinter.ufuncs):
        return _IN_PLACE_PRINTER.doprint(applied)
    # No ufunc to write through out= (the sigmoid helper selects between two branches): assign
    # the result back into the array's memory.
    return f"{target}[...] = {(printer or _PRINTER).doprint(applied)}"


def text(expr: sp.Expr, names: dict | None = None) -> str:
    """A plain one-line formula for a docstring or comment."""
    if names:
        expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    return sp.sstr(expr)


def _factor_out(expr: sp.Expr, factor: sp.Expr) -> sp.Expr | None:
    """expr / factor when that quotient no longer involves the factor's symbols, else None."""
    if factor == 1:
        return expr
    quotient = sp.cancel(expr / factor)
    if quotient.free_symbols & factor.free_symbols:
        return None
    return quotient


def _linear_coefficient(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr | None:
    """c when expr = c·symbol with c free of symbol, else None."""
    coefficient = sp.cancel(expr / symbol)
    if symbol in coefficient.free_symbols:
        return None
    return coefficient


def _chain(jacobian: sp.Expr, names: dict) -> tuple[str, str]:
    """The statement filling chain[:-1] with ∂o_k/∂o_(k−1) for k = 2..n, and the arguments of
    np.result_type that give the chain's dtype.

    ``jacobian`` is written with the stored arrays (``derivative``, o_t, o_(t−1)), each read from
    its row 1 on (k = 2). A product of two factors is written by np.multiply straight into the
    chain (no temporary the size of the states)."""
    arrays = {"derivative", *names.values()}
    expr = sp.sympify(jacobian).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    from_k2 = expr.xreplace({s: sp.Symbol(f"{s}[1:]") for s in expr.free_symbols if str(s) in arrays})
    if from_k2.is_Mul and len(from_k2.args) == 2:
        first, second = (code(factor) for factor in from_k2.args)
        statement = f"np.multiply({first}, {second}, out=chain[:-1])"
    else:
        statement = f"chain[:-1] = {code(from_k2)}"
    # The states' dtype and every other name the factor reads (w_h, say).
    others = sorted(str(s) for s in expr.free_symbols if str(s) not in arrays)
    return statement, ", ".join(["o_t", *others])


def _sum_of_products(expr: sp.Expr, names: dict) -> str:
    """Σ over all entries of ``expr``: a dot product of the two raveled arrays when expr is a
    product of two names (no temporary product array), else np.sum of the printed expression."""
    expr = sp.sympify(expr).xreplace({old: sp.Symbol(new) for old, new in names.items()})
    if expr.is_Mul and len(expr.args) == 2 and all(arg.is_Symbol for arg in expr.args):
        first, second = sorted(str(arg) for arg in expr.args)
        return f"{first}.ravel() @ {second}.ravel()"
    return f"np.sum({code(expr)})"


def factored(derivation: Derivation) -> dict:
    """The local derivatives with f′(a_t) as a shared factor (SymPy expressions, for every backend).

    "shared" is f′(a_t) (1 when it is a number), "jacobian" and "immediate_h" are ∂o_t/∂o_(t−1)
    and ∂⁺o_t/∂w_h divided by it, "coefficient_i" the c of ∂⁺o_t/∂w_i[d] = c·f′(a_t)·x_t_d.
    """
    step = derivation.unrolled.step
    derivative = derivation.step_derivative
    shared = derivative if not derivative.is_number else sp.S.One
    jacobian = _factor_out(derivation.step_jacobian, shared)
    immediate_h = _factor_out(derivation.step_immediate["w_h"][0], shared)
    # ∂⁺o_t/∂w_i for the vector w_i (f′(a_t) x_t with the vector symbol x_t): the same for every D.
    immediate_i = _factor_out(derivation.step_immediate_vector["w_i"], shared)
    if jacobian is None or immediate_h is None or immediate_i is None:
        raise NotImplementedError("local derivatives that do not share f'(a_t) are not supported yet")
    coefficient_i = _linear_coefficient(immediate_i, step.x_vector)
    if coefficient_i is None:
        raise NotImplementedError("∂⁺o_t/∂w_i is not (coefficient)·x_t: not supported yet")
    return {
        "derivative": derivative,
        "shared": shared,
        "jacobian": jacobian,
        "immediate_h": immediate_h,
        "coefficient_i": coefficient_i,
    }


def docstring_formulas(derivation: Derivation) -> dict:
    """The plain one-line formulas of the module docstring (shared by every backend)."""
    u = derivation.unrolled
    step = u.step
    local = {step.o: "o_t", step.o_prev: "o_prev"}
    output = {u.o[-1]: "o_n", u.y_hat: "y_hat", u.y: "y", u.w_o: "w_o"}
    return {
        "step": text(u.activation.apply(step.vector_a), local),
        "derivative": text(derivation.step_derivative, local),
        "jacobian": text(derivation.step_jacobian, local),
        "immediate_h": text(derivation.step_immediate["w_h"][0], local),
        "immediate_i": text(derivation.step_immediate["w_i"][0], {**local, step.x[0]: "x_t_d"}),
        "output_factor": text(derivation.output_factor, output),
        "dL_dw_o": text(derivation.dL_dw_o, output),
    }


def context(derivation: Derivation, mode: str, command: str) -> dict:
    """Everything the templates place: names, printed expressions, formulas. No SymPy objects."""
    model = derivation.model
    u = derivation.unrolled
    f = u.activation
    step = u.step
    gate = sp.Symbol("gate")

    # -- the local derivatives, from the derivation, with f′(a_t) as a shared factor -------------
    local = {step.o: "o_t", step.o_prev: "o_prev"}
    pieces = factored(derivation)
    derivative, shared = pieces["derivative"], pieces["shared"]
    jacobian, immediate_h = pieces["jacobian"], pieces["immediate_h"]
    coefficient_i = pieces["coefficient_i"]
    derivative_name = sp.Symbol("derivative")
    uses_derivative = shared != 1

    def with_derivative(expr):
        return expr * derivative_name if uses_derivative else expr

    jacobian_code = code(with_derivative(jacobian), local)
    gate_code = code(sp.Symbol("delta") * (derivative_name if uses_derivative else 1))
    chain_code, chain_dtype = _chain(with_derivative(jacobian), local)
    row_names = {step.o: "o[t]", step.o_prev: "o[t - 1]"}
    # In loss_and_grad δ_t is not needed after the gate, so the gate is written over it (δ has the
    # chain's dtype, which holds f′(a_t)'s: real states with a complex w_o give a complex δ).
    gate_in_place_code = "np.multiply(delta, derivative, out=delta)" if uses_derivative else None
    term_h_code = code(gate * immediate_h, local)
    gate_i = gate * coefficient_i
    gate_i_code = code(gate_i, local)
    term_h_atom = atom(gate * immediate_h, local)
    gate_i_atom = atom(gate_i, local)

    # -- the forward step, with the input projection w_i·x_t hoisted ----------------------------
    projection = sp.Symbol("projection_t")
    recurrent = sp.expand(step.vector_a - step.projection)  # w_i·x_t is one Dot, whatever D is
    loop_step = code(f.apply(projection + recurrent), {**local, projection: "projection_t"})
    # The same step in place, for wide batches: o_t holds w_i·x_t, gets w_h o_(t−1) added, then f.
    in_place_step = {"recurrent": code(recurrent, local), "activation": in_place(f, "o_t")}
    unrolled_steps = []
    if mode == "unrolled":
        rows = sp.IndexedBase("projection")
        for t in range(1, derivation.n + 1):
            hidden_part = sp.expand(u.vector_a[t - 1] - u.projection(t))
            name = str(u.o[t - 1])
            unrolled_steps.append(
                {
                    "t": t,
                    "name": name,
                    "code": code(f.apply(rows[t - 1] + hidden_part)),
                    "recurrent": code(hidden_part) if hidden_part != 0 else None,
                    "activation": in_place(f, name),
                }
            )
        for step in unrolled_steps:
            # In place, the row gets a name when a later step reads it or this step changes it.
            step["bind"] = bool(step["t"] < derivation.n or step["recurrent"] or step["activation"])

    # -- the output, from the derivation ----------------------------------------------------------
    output = {u.o[-1]: "o_n", u.y_hat: "y_hat", u.y: "y", u.w_o: "w_o"}
    output_factor_code = code(derivation.output_factor, output)
    logit_code = code(u.logit, output)
    dL_dw_o_code = code(derivation.dL_dw_o, output)

    # -- formulas for the docstrings ----------------------------------------------------------------
    formulas = docstring_formulas(derivation)
    terms = []
    if mode == "unrolled" and derivation.n <= 4:
        for term in derivation.terms():
            terms.append(
                {
                    "j": term.j,
                    "kind": term.kind,
                    "w_h": text(derivation.term("w_h", term.j)),
                    "w_i": text(derivation.term("w_i", term.j, 0)),
                }
            )

    return {
        "command": command,
        "mode": mode,
        "steps": derivation.n if mode == "unrolled" else None,
        "activation": model.activation,
        "input_size": model.inputs,
        "uses_sigmoid_activation": model.activation == "sigmoid",
        "loop_step": loop_step,
        "in_place_step": in_place_step,
        "unrolled_steps": unrolled_steps,
        "derivative_code": code(derivative, local) if uses_derivative else None,
        "jacobian_code": jacobian_code,
        "gate_code": gate_code,
        "term_h_code": term_h_code,
        "gate_i_code": gate_i_code,
        "term_h_atom": term_h_atom,
        "gate_i_atom": gate_i_atom,
        "output_factor_code": output_factor_code,
        "logit_code": logit_code,
        "output_code": code(u.output_definition, output),
        "backward": {
            "logit_code": logit_code,
            "output_factor_code": output_factor_code,
            "derivative_code": code(derivative, local) if uses_derivative else None,
            "jacobian_code": jacobian_code,
            "gate_code": gate_code,
            "chain_code": chain_code,
            "chain_dtype": chain_dtype,
            "gate_in_place_code": gate_in_place_code,
            # The same local derivatives for one step's rows (wide batches, step by step).
            "derivative_row_code": code(derivative, row_names) if uses_derivative else None,
            "cofactor_row_code": code(jacobian, row_names),
        },
        "dw_h_code": _sum_of_products(gate * immediate_h, local),
        "dL_dw_o_code": dL_dw_o_code,
        "formulas": formulas,
        "terms": terms,
    }


# -- statements in ruff's layout ---------------------------------------------------------------------

#: The line length the generated statements are laid out for: ruff's default (88), the narrower of
#: the two a generated module is checked under (the project's pyproject.toml says 110).
LINE_LENGTH = 88
#: The wider one: a split that ``ruff format`` would join at this width is pinned by ``SPLIT_NOTE``.
WIDE_LINE_LENGTH = 110
#: A comment on the first line of a split that fits in WIDE_LINE_LENGTH columns: a line comment
#: inside a split keeps it split, so the layout is the same at 88 and at 110 columns.
SPLIT_NOTE = "# wrapped at 88 columns"

_OPENING, _CLOSING = "([{", ")]}"
#: Binary operators by binding, loosest first (the generated code has no comparisons or booleans).
_BINDING = {"|": 1, "^": 2, "&": 3, "<<": 4, ">>": 4, "+": 5, "-": 5,
            "*": 6, "/": 6, "//": 6, "%": 6, "@": 6, "**": 8}


def formatted(statement: str, indent: int) -> str:
    """``statement`` laid out as ``ruff format`` lays it out (at LINE_LENGTH columns) for a line
    indented by ``indent`` spaces, in a form ruff keeps at WIDE_LINE_LENGTH columns too: calls and
    tuples that do not fit get one item a line with a (magic) trailing comma, an over-long
    right-hand side is wrapped in parentheses and split before its loosest operators, and a split
    that would fit at the wider length carries SPLIT_NOTE. The first line comes without the indent
    (the template places it), the others with it."""
    lines = _statement(statement, indent)
    return "\n".join([lines[0][indent:], *lines[1:]])


def formatted_item(head: str, source: str, tail: str, indent: int) -> str:
    """``head + source + tail`` (a dict entry ``"key": value,``) laid out as ``formatted`` lays
    out a statement, ``source`` an expression."""
    wide = indent + len(head) + len(source) + len(tail) <= WIDE_LINE_LENGTH
    lines = _expression(source, indent, head, tail, wide)
    return "\n".join([lines[0][indent:], *lines[1:]])


def _statement(source: str, indent: int) -> list[str]:
    import ast

    pad = " " * indent
    if indent + len(source) <= LINE_LENGTH or "\n" in source:
        return [pad + source]
    node = ast.parse(source).body[0]
    if isinstance(node, ast.Expr):
        head = ""
    elif isinstance(node, ast.Assign) and len(node.targets) == 1:
        head = f"{ast.get_source_segment(source, node.targets[0])} = "
    elif isinstance(node, ast.AugAssign):
        target = ast.get_source_segment(source, node.target)
        head = source[: len(target) + 1 + source[len(target) + 1 :].index("= ") + 2]
    else:
        return [pad + source]
    assert source.startswith(head), (source, head)
    value = source[len(head) :]
    wide = indent + len(source) <= WIDE_LINE_LENGTH
    if _breakable(value) is not None:
        # a call, subscript or bracketed value: split in its own last brackets
        return _atom(value, indent, head, "", wide)
    # anything else in parentheses, on one line of its own or split before its loosest operators
    inner = " " * (indent + 4)
    if len(inner) + len(value) <= LINE_LENGTH:
        note = f"  {SPLIT_NOTE}" if wide else ""
        return [f"{pad}{head}({note}", inner + value, pad + ")"]
    wide = wide or len(inner) + len(value) <= WIDE_LINE_LENGTH
    return [f"{pad}{head}(", *_expression(value, indent + 4, "", "", wide), pad + ")"]


def _tokens(source: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of the tokens of a one-line expression."""
    import io
    import tokenize

    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
            continue
        found.append((token.start[1], token.end[1], token.string))
    return found


def _operators(source: str) -> list[tuple[int, int, str]]:
    """The binary operators outside brackets, as (start, end, operator)."""
    depth, previous, found = 0, None, []
    for start, end, string in _tokens(source):
        if string in _OPENING:
            depth += 1
        elif string in _CLOSING:
            depth -= 1
        elif depth == 0 and string in _BINDING and previous is not None and (
                previous not in _BINDING and previous not in _OPENING and previous not in (",", ":", "=")):
            found.append((start, end, string))
        previous = string
    return found


def _breakable(source: str) -> tuple[int, int] | None:
    """For an atom (no operator outside brackets): the span of the bracket pair it is split in (its
    last, as ruff splits a call's arguments; the first when what follows it has no brackets,
    ``(…).sum(axis=0)``), or None (a name, or an operator outside brackets)."""
    if _operators(source):
        return None
    pairs, stack = [], []
    for start, _, string in _tokens(source):
        if string in _OPENING:
            stack.append(start)
        elif string in _CLOSING:
            opening = stack.pop()
            if not stack:
                pairs.append((opening, start))
    if not pairs:
        return None
    if source.startswith("(") and len(pairs) >= 2:
        # (a + b).sum(axis=0): the parenthesized value is split, the call after it stays whole
        return pairs[0]
    return pairs[-1]


def _split_items(source: str) -> list[str]:
    """The comma-separated items of a bracket's content (commas outside inner brackets)."""
    depth, items, start = 0, [], 0
    for begin, _, string in _tokens(source):
        if string in _OPENING:
            depth += 1
        elif string in _CLOSING:
            depth -= 1
        elif string == "," and depth == 0:
            items.append(source[start:begin].strip())
            start = begin + 1
    items.append(source[start:].strip())
    return [item for item in items if item]


def _atom(source: str, indent: int, head: str, tail: str, wide: bool) -> list[str]:
    """``head + source + tail`` on lines from ``indent``, ``source`` an atom split in its brackets."""
    pad = " " * indent
    if indent + len(head) + len(source) + len(tail) <= LINE_LENGTH:
        return [pad + head + source + tail]
    span = _breakable(source)
    if span is None:
        return [pad + head + source + tail]
    opening, closing = span
    before, content, after = source[: opening + 1], source[opening + 1 : closing], source[closing:]
    items = _split_items(content)
    inner = indent + 4
    if before == "(" and len(items) == 1 and not content.rstrip().endswith(","):
        # a parenthesized expression: its content on lines of its own, split like a right-hand side
        wide = wide or inner + len(content) <= WIDE_LINE_LENGTH
        if inner + len(content) <= LINE_LENGTH:
            note = f"  {SPLIT_NOTE}" if wide else ""
            return [f"{pad}{head}({note}", " " * inner + content, pad + after + tail]
        return [f"{pad}{head}(", *_expression(content, inner, "", "", wide), pad + after + tail]
    if before.endswith("[") and len(items) == 1:
        # a subscript: its one index on a line of its own
        body = _expression(items[0], inner, "", "", wide or inner + len(items[0]) <= WIDE_LINE_LENGTH)
        return [pad + head + before, *body, pad + after + tail]
    # call arguments, a tuple, list or dict: one item a line, with a magic trailing comma
    lines = [pad + head + before]
    for item in items:
        lines += _expression(item, inner, "", ",", inner + len(item) + 1 <= WIDE_LINE_LENGTH)
    return [*lines, pad + after + tail]


def _expression(source: str, indent: int, head: str, tail: str, wide: bool) -> list[str]:
    """``head + source + tail`` from ``indent``, the expression split before its loosest operators
    (an operand that still does not fit split in turn, at the same indent, as ruff does) or, an
    atom, in its brackets. ``wide``: the split would fit at WIDE_LINE_LENGTH, so it is pinned."""
    pad = " " * indent
    if indent + len(head) + len(source) + len(tail) <= LINE_LENGTH:
        return [pad + head + source + tail]
    operators = _operators(source)
    if not operators:
        return _atom(source, indent, head, tail, wide)
    loosest = min(_BINDING[op] for _, _, op in operators)
    if loosest == _BINDING["**"]:
        return [pad + head + source + tail]   # ruff keeps a power on one line
    cuts = [(start, end, op) for start, end, op in operators if _BINDING[op] == loosest]
    operands, prefixes, start = [], [head], 0
    for begin, end, op in cuts:
        operands.append(source[start:begin].strip())
        prefixes.append(f"{op} ")
        start = end
    operands.append(source[start:].strip())
    lines = []
    for k, (prefix, operand) in enumerate(zip(prefixes, operands)):
        last = k == len(operands) - 1
        width = indent + len(prefix) + len(operand) + (len(tail) if last else 0)
        lines += _expression(operand, indent, prefix, tail if last else "", width <= WIDE_LINE_LENGTH)
    if wide:
        # pin the split: a comment on a line of it but its last (inside its group), the first with
        # room for it, since ruff counts a comment in the width of its line
        room = [k for k, line in enumerate(lines[:-1]) if len(line) + 2 + len(SPLIT_NOTE) <= LINE_LENGTH
                and "#" not in line]
        k = room[0] if room else 0
        lines[k] = f"{lines[k]}  {SPLIT_NOTE}"
    return lines
