"""Interim: the hand-written line breaker and the copier of NumPy-module functions that the cell
backends (``cell_backend``, ``numba_cells``) still import while they are rewritten to print from a
layout and format with ``format.format_python``. The notes' modules use neither; delete this module
with the last import of it.
"""

from __future__ import annotations

import ast

#: The NumPy module's functions a Numba module copies to call (a cell module's bptt_terms and what it
#: calls), renamed with this prefix (``bptt_terms`` → ``_numpy_bptt_terms``, ``_sigmoid`` →
#: ``_numpy_sigmoid``).
PREFIX = "_numpy_"


def function_closure(functions: dict, roots) -> set[str]:
    """``roots`` and every module function they call, transitively."""
    wanted, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        calls = {n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name)}
        pending.extend(sorted(calls & set(functions)))
    return wanted


def _with_comments(lines: list[str], node: ast.stmt) -> str:
    """A top-level statement's source with the comment lines right above it."""
    first = node.lineno - 1
    while first > 0 and lines[first - 1].startswith("#"):
        first -= 1
    return "\n".join(lines[first : node.end_lineno])


def vectorised(numpy_source: str, roots: tuple[str, ...], shared_roots: tuple[str, ...]) -> str:
    """The NumPy module's functions ``roots`` and the module functions they call, verbatim but for
    their names: each gets ``PREFIX`` (its calls too, found as name tokens, so docstrings and
    comments are untouched). The functions of ``shared_roots`` (the validation), which the Numba
    module copies under their own names, are shared, not copied twice; so are the constants, which
    the Numba module copies, all of them."""
    import io
    import tokenize

    tree = ast.parse(numpy_source)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    shared = function_closure(functions, shared_roots)
    wanted = function_closure(functions, roots) - shared
    renamed = {name: PREFIX + name.lstrip("_") for name in wanted}
    assert len(set(renamed.values())) == len(renamed), f"two copied functions get one name: {renamed}"
    lines = numpy_source.splitlines()
    pieces = [_with_comments(lines, node) for node in tree.body if getattr(node, "name", None) in wanted]
    text = "\n\n\n".join(pieces)
    edits, previous = [], None
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and token.string in renamed and previous != ".":
            edits.append(token.start)
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token.string
    out = text.splitlines()
    for row, column in reversed(edits):
        line = out[row - 1]
        name = line[column:].split("(", 1)[0].split()[0].rstrip(":,)")
        out[row - 1] = line[:column] + renamed[name] + line[column + len(name) :]
    return "\n".join(out)


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
