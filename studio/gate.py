"""The promotion gate: whether a model version may become its model's ``production`` version.

Pure: the gate's configuration (stored on the model) and the results of the candidate and of the current
production version go in; every check comes out with its numbers and whether it passed. Nothing here reads where
the results came from: the caller passes them (``Results.source`` says where, for the words shown).

Checks, in order:
- ``min:METRIC``: the candidate's score is at least the configured minimum;
- ``drop:METRIC``: the candidate is no worse than production by more than ``max_drop`` (absolute, in the metric's
  own units), for each metric with a minimum, or every metric production has a score for when none is set; passes
  when there is no production version yet;
- ``slo``: the candidate met the configured SLO at the target rate.
A result that is missing fails its check and says so: an unmeasured version is not promoted by default. Each check
names where its numbers came from (``Results.source``: "evaluation 7, 120 examples"), in ``source`` and its words.

The configuration also names the evaluation set the scores are read from (``EvalSet``: a dataset version's split
and its scorers) and, optionally, how often production is evaluated on it again (``every_h``) and whom to tell when
it fails (``webhook``); ``watch`` is the part of the gate a production version is held to after promotion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from studio.scoring import ScorerSpec


class EvalSet(BaseModel):
    """The evaluation set the gate's scores come from: a dataset version's split, scored with ``scorers``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1)
    dataset_version: int = Field(ge=1)  # pinned: scores on different rows are not comparable
    split: str = "eval"
    scorers: tuple[ScorerSpec, ...] = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1)  # the first N rows only

    def describe(self) -> str:
        scorers = ", ".join(s.label for s in self.scorers)
        return f"{self.dataset} v{self.dataset_version} ({self.split}) with {scorers}"


class GateConfig(BaseModel):
    """What a version must show to be promoted to production. All empty: the model promotes freely."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimums: dict[str, float] = Field(default_factory=dict)  # metric → lowest acceptable score
    max_drop: float | None = Field(default=None, ge=0)  # how much worse than production a metric may be
    slo: str | None = None  # e.g. "p99_e2el_ms<=2000", met at ``slo_rate``
    slo_rate: float | None = Field(default=None, gt=0)  # requests per second the SLO must hold at
    evaluation: EvalSet | None = None  # where scores are read from; None: they are given with the promotion
    start_missing: bool = False  # a promotion starts the evaluations it lacks (and is refused until they end)
    every_h: float | None = Field(default=None, gt=0)  # production is evaluated again on ``evaluation`` this often
    webhook: str | None = None  # POSTed to when production fails ``watch``; None: the settings' default

    @property
    def empty(self) -> bool:
        return not self.minimums and self.max_drop is None and self.slo is None

    def describe(self) -> str:
        """The gate in words, as `cove model get` and the Models page show it."""
        if self.empty:
            return "none: promotes freely"
        parts = [f"{m} ≥ {v:g}" for m, v in sorted(self.minimums.items())]
        if self.max_drop is not None:
            parts.append(f"at most {self.max_drop:g} below production")
        if self.slo:
            parts.append(f"SLO {self.slo}" + (f" at {self.slo_rate:g} req/s" if self.slo_rate else ""))
        if self.evaluation is not None:
            parts.append(f"scored on {self.evaluation.describe()}")
        if self.every_h is not None:
            parts.append(f"production re-evaluated every {self.every_h:g} h")
        return "; ".join(parts)


@dataclass(frozen=True)
class Results:
    """What is known of one version's quality and serving: scores by metric, whether it met the gate's SLO (None:
    not measured), and where these came from (an evaluation, a benchmark run, a person's report)."""

    scores: Mapping[str, float] = field(default_factory=dict)
    slo_met: bool | None = None
    source: str = ""  # of the scores
    slo_source: str = ""  # of slo_met ("benchmark run 12"): the scores and the SLO come from different runs


@dataclass(frozen=True)
class Check:
    """One check of the gate: ``name`` (``min:exact_match``, ``drop:exact_match``, ``slo``), its numbers in
    words, and whether it passed."""

    name: str
    passed: bool
    observed: float | None
    required: float | None
    detail: str
    source: str = ""  # where the numbers came from ("evaluation 7, 120 examples")


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def describe(self) -> str:
        """The failing checks in words (or that all passed), one clause each."""
        if self.passed:
            return f"all {len(self.checks)} checks passed" if self.checks else "no gate: promotes freely"
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failing)


def _sourced(check: Check, source: str) -> Check:
    """``check`` with where its numbers came from, in its words too (a refusal is read as words)."""
    if not source:
        return check
    return Check(check.name, check.passed, check.observed, check.required, f"{check.detail} — {source}", source)


def _minimum(metric: str, floor: float, candidate: Results) -> Check:
    name = f"min:{metric}"
    score = candidate.scores.get(metric)
    if score is None:
        return _sourced(Check(name, False, None, floor, f"not measured (needs ≥ {floor:g})"), candidate.source)
    ok = score >= floor
    return _sourced(Check(name, ok, score, floor, f"{score:g} {'≥' if ok else '<'} {floor:g}"), candidate.source)


def _drop(metric: str, margin: float, candidate: Results, production: Results | None) -> Check:
    pairs = (("candidate", candidate), ("production", production))
    sources = [f"{who}: {r.source}" for who, r in pairs if r is not None and r.source]
    return _sourced(_dropped(metric, margin, candidate, production), "; ".join(sources))


def _dropped(metric: str, margin: float, candidate: Results, production: Results | None) -> Check:
    name = f"drop:{metric}"
    if production is None:
        return Check(name, True, candidate.scores.get(metric), None, "no production version to compare with")
    base = production.scores.get(metric)
    score = candidate.scores.get(metric)
    if base is None:
        return Check(name, False, score, None, "production's score not measured")
    floor = base - margin
    if score is None:
        return Check(name, False, None, floor, f"not measured (production {base:g}, margin {margin:g})")
    ok = score >= floor - 1e-12  # a drop of exactly the margin is allowed, whatever the float rounding
    allowed = f"allowed -{margin:g}"
    return Check(name, ok, score, floor, f"{score:g}, {score - base:+.4g} vs production's {base:g} ({allowed})")


def _slo(config: GateConfig, candidate: Results) -> Check:
    at = f" at {config.slo_rate:g} req/s" if config.slo_rate else ""
    if candidate.slo_met is None:
        return Check("slo", False, None, config.slo_rate, f"{config.slo}{at} not measured")
    met = "met" if candidate.slo_met else "missed"
    check = Check("slo", candidate.slo_met, None, config.slo_rate, f"{config.slo}{at} {met}")
    return _sourced(check, candidate.slo_source)


def evaluate(config: GateConfig, candidate: Results, production: Results | None) -> Verdict:
    """Every check ``config`` asks for, of ``candidate`` against ``production`` (None: there is no production
    version yet). An empty config has no checks, so it passes."""
    checks = [_minimum(m, floor, candidate) for m, floor in sorted(config.minimums.items())]
    if config.max_drop is not None:
        compared = sorted(config.minimums) or sorted(production.scores if production else candidate.scores)
        checks += [_drop(m, config.max_drop, candidate, production) for m in compared]
    if config.slo:
        checks.append(_slo(config, candidate))
    return Verdict(tuple(checks))


def watch(config: GateConfig, production: Results) -> Verdict:
    """What production is held to after its promotion, when it is evaluated again: the minimums (the margin is
    against production itself, so it has nothing to compare with)."""
    return Verdict(tuple(_minimum(m, floor, production) for m, floor in sorted(config.minimums.items())))
