"""``bptt grade``'s tolerances, catalogue of mistakes and report: what a verdict is and how it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: An entry is right within this relative error (float64 rounding of a BPTT stays near 1e-15).
RELATIVE = 1e-7
#: Relative errors are taken against max(|exact|, FLOOR · the case's largest |entry|), so entries that
#: are zero or tiny by cancellation are judged on the gradient's own scale.
FLOOR = 1e-4
#: Errors from RELATIVE up to this are re-judged against the exact value at DIGITS digits.
UNDECIDED = 1e-4
DIGITS = 60
#: float32's reach: a right formula computed in float32 (eps 1.2e-7) stays within this of the exact
#: gradient, against max(|exact|, FLOOR32 · s) (rounding accumulates over the steps and the batch).
RELATIVE32 = 1e-4
FLOOR32 = 1e-2

#: The mistakes grade can name; the engine's mutations keep the engine's names.
EXTRA_MISTAKES = {
    "no_activation_derivative_in_chain": (
        "f′ missing from ∂s_t/∂s_(t−1) only: the time recursion multiplies by the weights alone "
        "(the notes' ∂o_k/∂o_(k−1) written as w_h, not f′(a_k) w_h), the immediate partials keep f′"
    ),
    "derivative_wrong_step_in_chain": (
        "f′ at the wrong step in ∂s_t/∂s_(t−1) only: ∂o_k/∂o_(k−1) written with f′ of o_(k−1) where "
        "f′ of o_k belongs, the immediate partials right"
    ),
    "tanh_derivative_unsquared": "tanh′ written 1 − o where 1 − o² belongs (the square forgotten)",
    "total_derivative": (
        "the total derivative where the immediate partial belongs (the notes' own slip): "
        "∂L/∂w = Σ_j δ_j · d o_j/dw with d o_j/dw through o_(j−1) too, so every long-term path is "
        "counted again; the sum needs ∂⁺o_j/∂w, o_(j−1) held fixed"
    ),
}
#: The mistakes only a readout after every step can make (grade_every.py tries them there only).
EVERY_MISTAKES = {
    "last_step_only": (
        "the loss of the last step only: the readouts of steps 1..n − 1 send nothing back "
        "(the many-to-one readout where one after every step belongs)"
    ),
    "softmax_without_target": (
        "the softmax's error written ŷ_t where ŷ_t − e_(y_t) belongs (the 1 at the target class not "
        "subtracted: min-char-rnn's dy[targets[t]] -= 1 missing)"
    ),
    "squared_error_half": (
        "the squared error's derivative written ŷ_t − y_t where 2 (ŷ_t − y_t) belongs (the gradient of "
        "½ (ŷ − y)², not of (ŷ − y)²): every gradient half the exact one"
    ),
    "reduction_all": (
        "the mean over every step and sequence where the batch mean of the sum over steps belongs "
        "(--reduction steps): every gradient n times too small"
    ),
    "reduction_steps": (
        "the batch mean of the sum over steps where the mean over every step and sequence belongs "
        "(--reduction all): every gradient n times too large"
    ),
}


#: Mistakes that scale every gradient (ŷ − y negated; the batch summed): also tried on top of the others.
MODIFIERS = ("residual_sign", "no_batch_mean")
LOSS_MISTAKES = {
    "loss_summed": "the loss summed over the batch where the mean belongs",
    "loss_sign": "the loss with the wrong sign",
    "loss_scaled": "the loss scaled by a constant factor (½, 1/B, 1/n, a sum for a mean)",
}


def mistakes() -> dict[str, str]:
    """The catalogue: mistake name → what it is, in the order grade tries them."""
    from ..engine.derivation import MUTATIONS

    catalogue = {name: MUTATIONS[name] for name in MODIFIERS}
    for name, text in MUTATIONS.items():
        if name not in MODIFIERS:
            catalogue[name] = text
    catalogue |= EXTRA_MISTAKES
    return catalogue | EVERY_MISTAKES



def _relative(got: dict, want: dict, floor: float = FLOOR) -> dict:
    """name → per-entry |got − want| / max(|want|, floor · s); not finite → inf."""
    scale = max((float(np.max(np.abs(v))) for v in want.values() if np.size(v)), default=0.0)
    floor = max(floor * scale, np.finfo(float).tiny)
    errors = {}
    with np.errstate(all="ignore"):
        for name, value in want.items():
            error = np.abs(got[name] - value) / np.maximum(np.abs(value), floor)
            errors[name] = np.where(np.isfinite(error), error, np.inf)
    return errors


def _loss_error(got: float, want: float) -> float:
    with np.errstate(all="ignore"):
        error = abs(got - want) / max(abs(want), np.finfo(float).tiny)
    return float(error) if np.isfinite(error) else float("inf")


# -- the report ----------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One parameter (or the loss): right or not, where, how far off, and the mistake it matches."""

    parameter: str
    shape: tuple
    right: bool
    entries: list = field(default_factory=list)
    first_failing_steps: int | None = None
    #: every length n at which it is wrong
    failing_steps: list = field(default_factory=list)
    worst_relative_error: float = 0.0
    worst_case: dict | None = None
    mistake: str | None = None

    def as_data(self) -> dict:
        return {"parameter": self.parameter, "shape": list(self.shape), "right": self.right,
                "entries": [list(index) for index in self.entries],
                "first_failing_steps": self.first_failing_steps, "failing_steps": self.failing_steps,
                "worst_relative_error": self.worst_relative_error, "worst_case": self.worst_case,
                "mistake": self.mistake}


@dataclass
class Report:
    function: str
    interface: str
    model: str
    settings: dict
    cases: list
    findings: list
    localisation: str = ""
    mistake: str | None = None
    also: list = field(default_factory=list)
    source: str | None = None
    #: a mistake named outside the catalogue (a gate order, a constant factor, clipping, copies), in words
    diagnosis: str | None = None
    #: "float32" when the implementation computes in float32; ``strict``: graded at float64's tolerance anyway
    precision: str | None = None
    strict: bool = False
    #: whether errors between RELATIVE and UNDECIDED were re-judged at DIGITS digits (not for pairs)
    rejudged: bool = True
    #: the single mistakes tried (None: the whole catalogue), for "matches none of"
    tried: list | None = None

    @property
    def passed(self) -> bool:
        return all(finding.right for finding in self.findings)

    def as_data(self) -> dict:
        catalogue = {**mistakes(), **LOSS_MISTAKES}
        return {
            "file": self.source, "function": self.function, "interface": self.interface, "model": self.model,
            **self.settings,
            "passed": self.passed, "verdict": "right" if self.passed else "wrong",
            "tolerance": {"relative": RELATIVE, "floor": FLOOR, "undecided_up_to": UNDECIDED, "digits": DIGITS},
            "cases": [case.describe() for case in self.cases],
            "findings": [finding.as_data() for finding in self.findings],
            "localisation": self.localisation or None,
            "mistake": self.mistake,
            "mistake_description": _describe(self.mistake, catalogue) if self.mistake else self.diagnosis,
            "diagnosis": self.diagnosis, "precision": self.precision or "float64", "strict": self.strict,
            "also_consistent_with": self.also,
        }

    def _tolerance(self, decided: int) -> list[str]:
        if self.precision == "float32" and not self.strict:
            return [(f"tolerance: it computes in float32, so an entry g is right when |g − g_exact| ≤ {RELATIVE32:.0e}"
                     f" · max(|g_exact|, {FLOOR32:.0e} · s),"),
                    f"  s the case's largest |entry| (float32's reach; --strict applies float64's {RELATIVE:.0e})"]
        return [f"tolerance: an entry g is right when |g − g_exact| ≤ {RELATIVE:.0e} · max(|g_exact|, {FLOOR:.0e} · s),",
                "  s the case's largest |entry| (float64 rounding stays near 1e-15)"
                + (f"; errors up to {UNDECIDED:.0e} are re-judged at {DIGITS} digits" if self.rejudged else "")
                + (f" ({decided} case{'s' if decided != 1 else ''} so judged)" if decided else "")]

    def format(self) -> str:
        catalogue = {**mistakes(), **LOSS_MISTAKES}
        lengths = sorted({case.steps for case in self.cases})
        batches = sorted({case.batch for case in self.cases if case.data == "random"})
        notes = any(case.data == "notes" for case in self.cases)
        decided = sum(1 for case in self.cases if case.digits)
        lines = [
            f"grade {self.interface}" + (f" from {self.source}" if self.source else ""),
            f"model: {self.model}",
            f"{len(self.cases)} cases: n = {', '.join(map(str, lengths))} × B = {', '.join(map(str, batches))} "
            "at random points" + (", and the notes' three sentences (n = 3)" if notes else ""),
            *self._tolerance(decided),
            "",
        ]
        width = max(len(f.parameter) for f in self.findings)
        for finding in self.findings:
            if finding.right:
                lines.append(f"  {finding.parameter:<{width}}  right   worst relative error "
                             f"{finding.worst_relative_error:.1e}")
                continue
            where = ""
            if finding.failing_steps and len(lengths) > 1:
                first = finding.failing_steps[0]
                if finding.failing_steps != [n for n in lengths if n >= first]:
                    where = f"; wrong at n = {_listed(finding.failing_steps)} only"
                else:
                    where = f"; wrong from n = {first}" if first > lengths[0] else f"; wrong at n = {lengths[0]}"
            worst = finding.worst_case or {}
            case_text = f"n = {worst.get('steps')}, B = {worst.get('batch')}" + (
                ", the notes' sentences" if worst.get("data") == "notes" else "")
            lines.append(
                f"  {finding.parameter:<{width}}  WRONG   {_entries_text(finding)}{where}; worst relative error "
                f"{_error_text(finding.worst_relative_error)} ({case_text})"
                + (f"; matches {finding.mistake}" if finding.mistake and finding.mistake != self.mistake else "")
            )
        lines.append("")
        if self.passed and self.precision == "float32":
            lines.append(f"right formula, float32 precision: every entry within {RELATIVE32:.0e} · max(|g_exact|, "
                         f"{FLOOR32:.0e} · s) of the exact gradient (float32's reach) in all {len(self.cases)} "
                         "cases; it computes in float32, so float64's tolerance does not apply (--strict applies it)")
            return "\n".join(lines)
        if self.passed:
            lines.append(f"right: every entry within {RELATIVE:.0e} of the exact gradient in all "
                         f"{len(self.cases)} cases")
            return "\n".join(lines)
        lines.append(f"wrong: {self.localisation}" if self.localisation else "wrong")
        if self.diagnosis:
            lines.append(f"the mistake: {self.diagnosis}")
        elif self.mistake:
            parameters = [f.parameter for f in self.findings if not f.right]
            lines.append(f"the mistake: {self.mistake}: {_describe(self.mistake, catalogue)}")
            within = RELATIVE32 if self.precision == "float32" and not self.strict else RELATIVE
            lines.append(f"  ({', '.join(parameters)} match it within {within:.0e} in every case"
                         + (f"; also consistent with {', '.join(self.also)}" if self.also else "") + ")")
        else:
            named = [f for f in self.findings if not f.right and f.mistake]
            if named:
                lines.append("no single known mistake explains every wrong parameter; per parameter: "
                             + "; ".join(f"{f.parameter}: {f.mistake}" for f in named))
            else:
                lines.append("not a known mistake: it matches none of " + ", ".join(self.tried or mistakes()))
        return "\n".join(lines)


def _describe(name: str, catalogue: dict) -> str:
    return "; and ".join(catalogue[part] for part in name.split(" + "))


def _error_text(error: float) -> str:
    return "inf (not finite)" if not np.isfinite(error) else f"{error:.1e}"


def _entries_text(finding: Finding) -> str:
    total = int(np.prod(finding.shape)) if finding.shape else 1
    if total == 1:
        return "its value"
    if len(finding.entries) == total:
        return f"all {total} entries"
    shown = ", ".join(str(list(e)) if len(e) > 1 else str(e[0]) for e in finding.entries[:6])
    more = ", …" if len(finding.entries) > 6 else ""
    return f"{len(finding.entries)} of {total} entries ({shown}{more})"



def _listed(numbers) -> str:
    return ", ".join(map(str, numbers))
