"""Differential privacy: per-issuer budgets, noise from OpenDP's samplers, and the noisy release.

An issuer with a `[privacy.ISSUER]` section gets every aggregate over another party's data noised:
COUNT and integer SUM with discrete Laplace (or discrete Gaussian), float SUM with Laplace, AVG as
noisy SUM / noisy COUNT. Each query spends `query_epsilon` (and `query_delta`), split evenly over
the noisy values of one group (sequential composition; disjoint groups compose in parallel).
Sensitivities come from the declared contribution bounds: every table in the query declares
`max_rows_per_identity` (enforced by its owner before anything is computed) and SUM/AVG columns
declare clamping `bounds`. Grouped results release a group only if its noisy row count reaches a
threshold chosen so that a group of a single identity passes with probability at most δ (the
stability-histogram argument of SmartNoise's censor_dims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

NOISES = ("laplace", "gaussian")
PRIVACY_KEYS = {"epsilon", "delta", "query_epsilon", "query_delta", "noise"}


@dataclass(frozen=True)
class PrivacyBudget:
    issuer: str
    epsilon: float
    delta: float
    query_epsilon: float
    query_delta: float
    noise: str = "laplace"


def parse_privacy(raw, problem, parties) -> dict[str, PrivacyBudget]:
    budgets: dict[str, PrivacyBudget] = {}
    if not isinstance(raw, dict):
        problem("privacy", "must be a table of [privacy.PARTY] sections")
        return budgets
    for issuer, body in raw.items():
        key = f"privacy.{issuer}"
        if issuer not in parties:
            problem(key, f"unknown party {issuer!r}")
            continue
        if not isinstance(body, dict):
            problem(key, "must be a table")
            continue
        for k in sorted(set(body) - PRIVACY_KEYS):
            problem(f"{key}.{k}", "unknown key")
        numbers = {}
        for name, default in (("epsilon", None), ("delta", 1e-6)):
            value = body.get(name, default)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0 or (
                    name == "epsilon" and value == 0) or (name == "delta" and value >= 1):
                problem(f"{key}.{name}", "must be a number: epsilon > 0, 0 <= delta < 1")
                value = None
            numbers[name] = value
        if None in numbers.values():
            continue
        query_epsilon = body.get("query_epsilon", min(1.0, numbers["epsilon"]))
        query_delta = body.get("query_delta", numbers["delta"] / 10 if numbers["delta"] else 0.0)
        if not isinstance(query_epsilon, (int, float)) or isinstance(query_epsilon, bool) or not 0 < query_epsilon <= numbers["epsilon"]:
            problem(f"{key}.query_epsilon", "must be > 0 and at most epsilon")
            continue
        if not isinstance(query_delta, (int, float)) or isinstance(query_delta, bool) or not 0 <= query_delta <= numbers["delta"]:
            problem(f"{key}.query_delta", "must be >= 0 and at most delta")
            continue
        noise = body.get("noise", "laplace")
        if not isinstance(noise, str) or noise not in NOISES:
            problem(f"{key}.noise", f"must be one of {', '.join(NOISES)}")
            continue
        if noise == "gaussian" and query_delta <= 0:
            problem(f"{key}.query_delta", "Gaussian noise needs query_delta > 0")
            continue
        budgets[issuer] = PrivacyBudget(issuer, float(numbers["epsilon"]), float(numbers["delta"]),
                                        float(query_epsilon), float(query_delta), noise)
    return budgets


@dataclass(frozen=True)
class NoiseSpec:
    """How one output column is released: `kind` count | sum | avg | key (a group key, unnoised)."""

    name: str
    kind: str
    sensitivity: float = 0.0  # of the sum (count sensitivity is `count_sensitivity`)
    count_sensitivity: float = 1.0
    integer: bool = True


@dataclass(frozen=True)
class Release:
    """The noisy release of one party's aggregate part."""

    specs: tuple[NoiseSpec, ...]
    epsilon: float  # for each noisy value
    delta: float  # for each noisy value (Gaussian)
    noise: str
    threshold: float | None  # grouped: minimum noisy row count (column "__n")

    def scale(self, sensitivity: float) -> float:
        """Laplace scale b = Δ/ε; Gaussian σ for (ε, δ) through zCDP: ε = ρ + 2√(ρ ln 1/δ), σ = Δ/√(2ρ)."""
        if self.noise == "laplace":
            return sensitivity / self.epsilon
        log = math.log(1 / self.delta)
        rho = (math.sqrt(log + self.epsilon) - math.sqrt(log)) ** 2
        return sensitivity / math.sqrt(2 * rho)


def group_threshold(noise: str, scale: float, count_sensitivity: float, delta: float, minimum: int) -> float:
    """Noisy count a group needs so that a single identity's group passes with probability ≤ δ."""
    if delta <= 0:
        return float("inf")
    if noise == "laplace":
        tail = scale * math.log(1 / (2 * delta))
    else:
        tail = scale * math.sqrt(2 * math.log(1 / delta))
    return max(float(minimum), count_sensitivity + tail)


def sample(values, scale: float, integer: bool, noise: str) -> np.ndarray:
    """Add noise from OpenDP's samplers (discrete for integers) to each value."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    values = list(values)
    if not values:
        return np.array(values)
    if integer:
        domain, data = dp.vector_domain(dp.atom_domain(T=int)), [int(v) for v in values]
        metric = dp.l1_distance(T=int) if noise == "laplace" else dp.l2_distance(T=int)
    else:
        domain, data = dp.vector_domain(dp.atom_domain(T=float, nan=False)), [float(v) for v in values]
        metric = dp.l1_distance(T=float) if noise == "laplace" else dp.l2_distance(T=float)
    make = dp.m.make_laplace if noise == "laplace" else dp.m.make_gaussian
    return np.array(make(domain, metric, scale=scale)(data))


def release(table: pa.Table, plan: Release) -> pa.Table:
    """Noise a party's aggregate part; drop groups below the threshold; keep the final columns."""
    columns: dict[str, pa.Array] = {}
    keep = np.ones(table.num_rows, dtype=bool)
    if plan.threshold is not None:
        n = table.column("__n").to_numpy(zero_copy_only=False)
        count_scale = plan.scale(max(s.count_sensitivity for s in plan.specs) if plan.specs else 1.0)
        keep = sample(n, count_scale, True, plan.noise) >= plan.threshold
    for spec in plan.specs:
        if spec.kind == "key":
            columns[spec.name] = table.column(spec.name)
            continue
        if spec.kind == "count":
            raw = table.column(spec.name).to_numpy(zero_copy_only=False)
            columns[spec.name] = pa.array(sample(raw, plan.scale(spec.count_sensitivity), True, plan.noise))
            continue
        sums = table.column(f"{spec.name}__sum").to_pylist()
        noisy = sample([s or 0 for s in sums], plan.scale(spec.sensitivity), spec.integer, plan.noise)
        if spec.kind == "sum":
            columns[spec.name] = pa.array(noisy)
            continue
        counts = table.column(f"{spec.name}__count").to_numpy(zero_copy_only=False)
        noisy_counts = sample(counts, plan.scale(spec.count_sensitivity), True, plan.noise)
        with np.errstate(divide="ignore", invalid="ignore"):
            avg = np.where(noisy_counts > 0, noisy / np.maximum(noisy_counts, 1), np.nan)
        columns[spec.name] = pa.array(avg, mask=noisy_counts <= 0)
    out = pa.table(columns)
    return out.filter(pa.array(keep)) if plan.threshold is not None else out
