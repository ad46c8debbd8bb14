"""``bptt check``'s report: what was compared (``Report``, the data ``--json`` prints) and its text, one
row per method for the plain RNN and one row per parameter for any other cell (an LSTM has 13)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .check_float32 import float32, verdict

#: The notes' parameters, the columns of a report that names none.
PARAMETERS = ("w_i", "w_h", "w_o")
#: The relative tolerance of a module's vjp against five-point finite differences (``check_vjp``).
VJP_TOLERANCE = 1e-6


@dataclass
class Report:
    path: str
    activation: str
    steps: int
    cases: int
    #: method → parameter → worst relative error, or None when that parameter could not be compared
    errors: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    hidden: int = 1
    bias: bool = False
    #: "rnn", or the module's CELL for a module with the dict interface (CELL and PARAMS)
    cell: str = "rnn"
    #: method → parameter → gradient entries compared, summed over the batches
    compared: dict = field(default_factory=dict)
    #: what the module returned that cannot be compared (NaN, wrong shape, dtype, type or count)
    problems: list = field(default_factory=list)
    #: parameter → the call where finite differences could not resolve its gradient (their estimates
    #: at three steps differ more than from the gradient; the complex step compares it)
    unresolved: dict = field(default_factory=dict)
    #: the calls made, one per code path reached: {"path", "batch", "steps", "cases", "error"}, error the
    #: worst relative error over every parameter and method at that width and length (None: not compared)
    paths: list = field(default_factory=list)
    #: "float32" when the module computes in float32 (``check_float32``); ``strict``: judged at float64's
    #: tolerances anyway
    precision: str = "float64"
    strict: bool = False
    #: the backward entry point's gradients (each parameter, x, each s_0) → relative error against finite
    #: differences of ⟨upstream, states⟩ (``check_vjp``); empty when the module has no vjp
    vjp: dict = field(default_factory=dict)
    #: the calls passed a mask dropping one step of each sequence (a readout after every step)
    masked: bool = False

    @property
    def passed(self) -> bool:
        """True only if every parameter was compared by every method and is within tolerance."""
        if self.cases < 1 or self.problems or not self.errors:
            return False
        if not all(error is not None and error <= VJP_TOLERANCE for error in self.vjp.values()):
            return False
        for method, per_parameter in self.errors.items():
            if not per_parameter:
                return False
            for name, error in per_parameter.items():
                counted = self.compared.get(method, {}).get(name, 0)
                # written so that NaN (or None) fails: NaN <= tolerance is False
                if error is None or counted < 1 or not error <= self.tolerances[method]:
                    return False
        return True


def _failed_line(report: Report) -> str:
    if report.precision == "float32" and not report.problems:
        return verdict(float32(report.strict), report.passed, next(iter(report.tolerances.values()), 0.0))
    if report.passed:
        return "passed"
    if report.problems:
        return "FAILED: the module returned values that cannot be compared (above)"
    return "FAILED: a gradient disagrees beyond tolerance"


def _cell(error, width: int) -> str:
    return f"{'n/a':>{width}}" if error is None else f"{error:>{width}.2e}"


def failing(report: Report, method: str) -> list[str]:
    tolerance = report.tolerances[method]
    return [name for name, error in report.errors[method].items() if error is None or not error <= tolerance]


def _masked(report: Report) -> str:
    return ", each with a mask dropping one step of each sequence" if report.masked else ""


def _format_rows(report: Report) -> str:
    """One row per parameter (an LSTM has 13), one column per method."""
    methods = list(report.errors)
    title = f"{report.path}: cell {report.cell}, n = {report.steps}" + (
        f", H = {report.hidden}" if report.hidden else ""
    )
    lines = [
        f"{title}, {report.cases} random batches{_masked(report)}",
        f"  {'parameter':<12}" + "".join(f"{method:>22}" for method in methods),
    ]
    for name in next(iter(report.errors.values()), {}):
        lines.append(f"  {name:<12}" + "".join(_cell(report.errors[m][name], 22) for m in methods))
    lines.append(f"  {'tolerance':<12}" + "".join(f"{report.tolerances[m]:>22.0e}" for m in methods))
    results = []
    for method in methods:
        failed = failing(report, method)
        named = "FAIL " + ",".join(failed)
        if len(named) >= 22:  # the column's width
            named = f"FAIL {len(failed)} of {len(report.errors[method])}"
        results.append(named if failed else "ok")
    lines.append(f"  {'result':<12}" + "".join(f"{result:>22}" for result in results))
    return "\n".join(lines + _tail(report))


def _path_lines(report: Report) -> list[str]:
    """One line per width and length called: whether every comparison there was within tolerance."""
    lines = ["  calls (sequences × steps: the code paths they reach)"]
    for probe in report.paths:
        errors = probe["errors"]
        within = bool(errors) and all(
            error is not None and error <= report.tolerances[method] for method, error in errors.items()
        )
        verdict = "ok" if within else ("FAIL" if errors else "n/a")
        size = f"{probe['batch']} × {probe['steps']}"
        cases = f" ({probe['cases']} batches)" if probe["cases"] > 1 else ""
        lines.append(f"    {size:<14}{verdict:<6}{probe['path']}{cases}")
    return lines


def _tail(report: Report) -> list[str]:
    lines = _path_lines(report) if report.paths else []
    lines += [f"  {method:<20}skipped: {reason}" for method, reason in report.skipped.items()]
    if report.vjp:
        worst = max(report.vjp.values(), key=lambda error: -1.0 if error is None else error)
        lines.append(f"  {'vjp':<20}worst {_cell(worst, 0).strip()} over {len(report.vjp)} gradients (parameters, x, "
                     f"s_0) against finite differences of ⟨upstream, states⟩, tolerance {VJP_TOLERANCE:.0e}")
        beyond = [what for what, error in report.vjp.items() if error is None or not error <= VJP_TOLERANCE]
        if beyond:
            lines.append(f"  FAIL vjp: {', '.join(beyond)} beyond tolerance")
    if report.unresolved:
        where = ", ".join(f"{name} ({call})" for name, call in report.unresolved.items())
        lines.append(f"  finite differences  cannot resolve {where}: their estimates at steps h, h/10 and "
                     "h/100 differ more than they differ from the gradient (the loss bends too sharply); the "
                     "complex step compares them")
    lines += [f"  FAIL {problem}" for problem in report.problems]
    return lines + [_failed_line(report)]


def format_report(report: Report) -> str:
    if report.cell != "rnn":
        return _format_rows(report)
    parameters = list(next(iter(report.errors.values()), {})) or list(PARAMETERS)
    shape = ""
    if report.hidden != 1 or report.bias:
        shape = f", H = {report.hidden}" + (", with biases" if report.bias else "")
    title = f"{report.path}: activation {report.activation}, n = {report.steps}{shape}"
    lines = [
        f"{title}, {report.cases} random batches{_masked(report)}",
        f"  {'method':<20}" + "".join(f"{p:>12}" for p in parameters) + f"{'tolerance':>12}  result",
    ]
    for method, worst in report.errors.items():
        ok = not failing(report, method)
        lines.append(
            f"  {method:<20}"
            + "".join(_cell(worst[p], 12) for p in parameters)
            + f"{report.tolerances[method]:>12.0e}  {'ok' if ok else 'FAIL'}"
        )
    return "\n".join(lines + _tail(report))


__all__ = ["PARAMETERS", "Report", "failing", "format_report"]
