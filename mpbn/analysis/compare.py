"""Per-seed numbers of runs, and a baseline-vs-variant comparison with a Welch interval.

Every number comes from a run directory written by ``mpbn train``: a finished seed's
``seed_<s>/result.json`` (else its entry in ``summary.json``), its ``metrics.jsonl`` for the
spike rate and for seeds still training. A comparison of two runs reports, per run, the mean
and sample std over seeds of the final test accuracy, and the difference ``variant - baseline``
with a 95% Welch confidence interval (unequal variances, Welch-Satterthwaite degrees of
freedom). The Student-t quantile is computed here (regularized incomplete beta and bisection),
so the comparison needs no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpbn.analysis.io import Run

__all__ = ["SEED_KEYS", "SeedRecord", "seed_records", "seed_values", "has_holdout",
           "expected_seeds", "student_t_cdf", "student_t_ppf", "welch_ci", "compare_runs",
           "mean_std_text", "mismatch_text", "mismatch_cell", "runs_table", "runtime_text",
           "commit_text", "seeds_table", "comparison_table"]

#: The per-seed numbers of ``result.json`` (and the per-seed lists of ``summary.json``).
SEED_KEYS = ("final_test_acc", "best_test_acc", "final_val_acc", "best_val_acc",
             "test_acc_flip", "folded_test_acc", "spike_mismatch", "spike_mismatch_rate",
             "spike_mismatch_float64", "train_time", "epochs", "commit", "commit_history",
             "runtime")

#: ``summary.json`` calls the per-seed commit list ``commits`` (``commit`` is the run's), their
#: histories ``commit_histories``, and the per-seed runtime settings ``runtimes``.
_SUMMARY_KEY = {"commit": "commits", "commit_history": "commit_histories",
                "runtime": "runtimes"}

_ACC = 100.0  # fractions in the run files, percent on the pages


@dataclass
class SeedRecord:
    """One seed of a run.

    Attributes:
        seed: The seed.
        finished: It wrote ``result.json`` (or is listed in ``summary.json``).
        epochs_done: Epoch records in its ``metrics.jsonl``.
        values: :data:`SEED_KEYS` of a finished seed (``{}`` for one still training).
        last_epoch: Its last ``metrics.jsonl`` record (``{}`` when none).
    """

    seed: int
    finished: bool
    epochs_done: int
    values: dict[str, Any] = field(default_factory=dict)
    last_epoch: dict[str, Any] = field(default_factory=dict)

    @property
    def spike_rate(self) -> float | None:
        """Spikes per neuron and step in the last epoch's evaluation (``metrics.jsonl``)."""
        value = self.last_epoch.get("spike_rate")
        return None if value is None else float(value)


def seed_records(run: Run) -> dict[int, SeedRecord]:
    """Every seed that left a trace in ``run`` (a seed folder, or a ``summary.json`` entry)."""
    summary_seeds = list(run.summary.get("seeds") or [])
    seeds = sorted(set(run.metrics) | set(run.results) | set(summary_seeds))
    records = {}
    for seed in seeds:
        values: dict[str, Any] = {}
        if seed in run.results:
            values = {k: run.results[seed].get(k) for k in SEED_KEYS}
        elif seed in summary_seeds:
            i = summary_seeds.index(seed)
            for key in SEED_KEYS:
                column = run.summary.get(_SUMMARY_KEY.get(key, key))
                values[key] = column[i] if isinstance(column, list) and i < len(column) else None
        metrics = run.metrics.get(seed, [])
        records[seed] = SeedRecord(seed=seed, finished=bool(values), epochs_done=len(metrics),
                                   values=values, last_epoch=metrics[-1] if metrics else {})
    return records


def has_holdout(run: Run) -> bool:
    """Whether the run measured its epochs on a held-out split (``data.holdout``)."""
    if (run.config.get("data") or {}).get("holdout"):
        return True
    return any("val_acc" in r for records in run.metrics.values() for r in records) or any(
        r.get("final_val_acc") is not None for r in run.results.values())


def expected_seeds(run: Run, default: Sequence[int] = (0, 1, 2)) -> list[int]:
    """The seeds the run's config asks for (``run.seed`` .. ``run.seed + run.seeds - 1``)."""
    cfg = run.config.get("run") or {}
    if "seeds" not in cfg:
        return list(default)
    first = int(cfg.get("seed", 0))
    return list(range(first, first + int(cfg["seeds"])))


def _from_metrics(records: list[dict[str, Any]], key: str) -> float | None:
    metric, pick = {"final_test_acc": ("test_acc", "last"), "best_test_acc": ("test_acc", "max"),
                    "final_val_acc": ("val_acc", "last"),
                    "best_val_acc": ("val_acc", "max")}.get(key, (None, None))
    values = [r[metric] for r in records if metric and r.get(metric) is not None]
    if not values:
        return None
    return float(values[-1] if pick == "last" else max(values))


def seed_values(run: Run, key: str) -> list[float]:
    """``key`` (one of :data:`SEED_KEYS`, or ``"spike_rate"``) of every seed that has it.

    Finished seeds give their ``result.json`` / ``summary.json`` value (``spike_rate``: their
    last epoch's, from ``metrics.jsonl``). Only when no seed has finished (the first seeds still
    training) do the numbers fall back to the epoch records: ``final_*`` is the last epoch's,
    ``best_*`` the best; ``*_test_acc`` reads ``test_acc`` (runs without a held-out split),
    ``*_val_acc`` reads ``val_acc``. A held-out run logs no ``test_acc`` per epoch, so its test
    accuracy exists only once a seed has finished.
    """
    records = seed_records(run)
    finished = [r for r in records.values() if r.finished]
    if key == "spike_rate":
        return [r.spike_rate for r in finished or records.values() if r.spike_rate is not None]
    if finished:
        return [float(r.values[key]) for r in finished if r.values.get(key) is not None]
    values = [_from_metrics(run.metrics.get(s, []), key) for s in records]
    return [v for v in values if v is not None]


# --- Student t and Welch ---------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom (any real ``df``).

    ``P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)``.
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the cdf).

    Agrees with ``scipy.stats.t.ppf`` to about 1e-10 (tested against tabulated values:
    ``t(0.975, 2) = 4.302653``, ``t(0.975, 4) = 2.776445``, ``t(0.975, 30) = 2.042272``).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def welch_ci(baseline: Sequence[float], variant: Sequence[float],
             level: float = 0.95) -> dict[str, Any]:
    """Difference of means ``variant - baseline`` and its Welch confidence interval.

    ``se = sqrt(s_b^2 / n_b + s_v^2 / n_v)`` with sample variances (``ddof=1``);
    Welch-Satterthwaite ``df = se^4 / ((s_b^2/n_b)^2 / (n_b-1) + (s_v^2/n_v)^2 / (n_v-1))``;
    interval ``diff ± t_{(1+level)/2, df} se``.

    Returns:
        ``{"diff", "low", "high", "se", "df", "t", "level", "n_baseline", "n_variant"}``;
        with fewer than 2 values on a side there is no interval (``low``, ``high``, ``se``,
        ``df``, ``t`` are None). When both sides have zero spread the interval is the point
        ``diff`` (``se = 0``; ``df`` is then ``n_b + n_v - 2``).
    """
    b = np.asarray([float(v) for v in baseline], dtype=np.float64)
    v = np.asarray([float(x) for x in variant], dtype=np.float64)
    out: dict[str, Any] = {"diff": None, "low": None, "high": None, "se": None, "df": None,
                           "t": None, "level": level, "n_baseline": len(b), "n_variant": len(v)}
    if len(b) == 0 or len(v) == 0:
        return out
    out["diff"] = float(v.mean() - b.mean())
    if len(b) < 2 or len(v) < 2:
        return out
    qb, qv = float(b.var(ddof=1)) / len(b), float(v.var(ddof=1)) / len(v)
    se = math.sqrt(qb + qv)
    denom = qb * qb / (len(b) - 1) + qv * qv / (len(v) - 1)
    df = float((qb + qv) ** 2 / denom) if denom > 0 else float(len(b) + len(v) - 2)
    t = student_t_ppf(0.5 * (1.0 + level), df)
    out.update(se=se, df=df, t=t, low=out["diff"] - t * se, high=out["diff"] + t * se)
    return out


def _value(record: SeedRecord, key: str) -> float | None:
    value = record.spike_rate if key == "spike_rate" else record.values.get(key)
    return None if value is None else float(value)


def compare_runs(baseline: Run, variant: Run, key: str = "final_test_acc",
                 level: float = 0.95) -> dict[str, Any]:
    """Mean ± sample std of ``key`` over the finished seeds of each run, and the Welch
    difference. ``key`` is one of :data:`SEED_KEYS` or ``"spike_rate"`` (the last epoch's).

    Returns:
        ``{"key", "baseline": {"name", "seeds", "values", "mean", "std"}, "variant": {...},
        "welch": welch_ci(...)}``, ``seeds`` the finished seeds that have ``key``; values are as
        the run files hold them (fractions for accuracies).
    """
    def side(run: Run) -> dict[str, Any]:
        finished = {s: _value(r, key) for s, r in seed_records(run).items() if r.finished}
        finished = {s: v for s, v in finished.items() if v is not None}
        values = list(finished.values())
        return {"name": run.name, "seeds": list(finished), "values": values,
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}

    base, var = side(baseline), side(variant)
    return {"key": key, "baseline": base, "variant": var,
            "welch": welch_ci(base["values"], var["values"], level)}


# --- markdown --------------------------------------------------------------------------------

def mean_std_text(values: Sequence[float] | None, ddof: int = 1, scale: float = 1.0,
                  digits: int = 2) -> str:
    """``"mean ± std"`` of ``values * scale`` (``"-"`` when empty, no ``±`` for one value);
    ``ddof=1`` is the sample std, as ``summary.json``'s ``std``."""
    vals = [float(v) * scale for v in (values or []) if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=ddof):.{digits}f}"


def mismatch_text(run: Run) -> str:
    """The seeds' float32 spike mismatches, the largest rate, and where the engine recounted
    them in float64 (``spike_mismatch_float64``), every seed's recount (``-``: none)."""
    counts = seed_values(run, "spike_mismatch")
    if not counts:
        return "-"
    rates = seed_values(run, "spike_mismatch_rate")
    text = ", ".join(str(int(c)) for c in counts)
    # All-zero counts have no rate worth printing ("0, 0, 0", not "(0.0e+00 max)").
    notes = [f"{max(rates):.1e} max"] if rates and max(rates) > 0 else []
    if seed_values(run, "spike_mismatch_float64"):
        recounts = [r.values.get("spike_mismatch_float64") for r in seed_records(run).values()
                    if r.finished and r.values.get("spike_mismatch") is not None]
        notes.append("in float64: " + ", ".join("-" if v is None else str(int(v))
                                                for v in recounts))
    return text + (f" ({'; '.join(notes)})" if notes else "")


def mismatch_cell(count: int | None, float64: int | None = None,
                  rate: float | None = None) -> str:
    """One seed's spike mismatch: the float32 count, its rate where given and the count is not
    0, and its float64 recount where made, e.g. ``4 (5.1e-06; 0 in float64)``.

    For an exact fold the count is non-zero only in float32, where BN folded into the conv
    weights rounds differently and a potential within rounding of its threshold fires on one
    side only."""
    if count is None:
        return "-"
    notes = ([f"{rate:.1e}"] if count and rate is not None else []) + (
        [f"{float64} in float64"] if float64 is not None else [])
    return str(count) + (f" ({'; '.join(notes)})" if notes else "")


def _seeds_text(run: Run) -> str:
    records = seed_records(run)
    done = [s for s, r in records.items() if r.finished]
    training = [s for s, r in records.items() if not r.finished]
    missing = [s for s in expected_seeds(run) if s not in records]
    notes = ([f"training {', '.join(map(str, training))}"] if training else []) + (
        [f"missing {', '.join(map(str, missing))}"] if missing else [])
    text = f"{len(done)}/{len(expected_seeds(run))}"
    return text + (f" ({'; '.join(notes)})" if notes else "")


def runs_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """One row per run: finished seeds, and mean ± std over them of every reported number.

    *test* is the official test set (evaluated once at the end for held-out runs), *held-out*
    the validation split taken out of the training set, *flip TTA* the test accuracy with
    flip test-time augmentation, never the headline.
    """
    lines = ["| run | T | MPBN | seeds | test acc (%) | held-out acc, final (%) | "
             "held-out acc, best epoch (%) | test acc, flip TTA (%) | folded test acc (%) | "
             "spike mismatch | spike rate | train time (min) |", "|" + " --- |" * 12]
    for run, label in zip(runs, labels, strict=True):
        model = run.config.get("model") or {}
        lines.append(
            f"| {label} | {model.get('timesteps', '-')} | {model.get('mpbn') or 'none'} | "
            f"{_seeds_text(run)} | "
            + " | ".join(mean_std_text(seed_values(run, k), scale=_ACC) for k in (
                "final_test_acc", "final_val_acc", "best_val_acc", "test_acc_flip",
                "folded_test_acc"))
            + f" | {mismatch_text(run)} | "
            f"{mean_std_text(seed_values(run, 'spike_rate'), digits=3)} | "
            f"{mean_std_text(seed_values(run, 'train_time'), scale=1 / 60, digits=1)} |")
    return "\n".join(lines)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{_ACC * float(value):.2f}"


def runtime_text(runtime: dict[str, Any] | None) -> str:
    """A seed's runtime record (``result.json``'s ``runtime``) in a table cell: device,
    processes, threads, compiled or eager, allocator; "-" for records written before it."""
    if not runtime:
        return "-"
    processes = runtime.get("processes", 1)
    parts = [str(runtime.get("device", "?")) + (f" x{processes}" if processes != 1 else ""),
             f"{runtime.get('threads', '?')} threads",
             "compiled" if runtime.get("compile") else "eager"]
    if runtime.get("grad_checkpointing"):
        parts.append(f"grad checkpointing {runtime['grad_checkpointing']}")
    return ", ".join(parts + [str(runtime.get("allocator", "?"))])


def commit_text(commit: str | None, history: Sequence[str | None] | None = None) -> str:
    """A seed's code for a table: its commit, shortened; where its invocations ran different
    commits (``history``), each in order, ``?`` for one not known."""
    def short(c: str | None) -> str:
        return "?" if not c else f"`{c[:12]}{'+dirty' if 'dirty' in c else ''}`"

    if history and len(history) > 1:
        return " then ".join(short(c) for c in history)
    return short(commit) if commit else "-"


def seeds_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """One row per expected seed of every run: its numbers, train time, what it ran on
    (:func:`runtime_text`) and commit; a seed still training shows its epoch count, a seed not
    started is marked missing."""
    lines = ["| run | seed | status | test acc (%) | held-out acc, final (%) | "
             "test acc, flip TTA (%) | folded test acc (%) | spike mismatch | "
             "train time (min) | ran on | commit |", "|" + " --- |" * 11]
    for run, label in zip(runs, labels, strict=True):
        records = seed_records(run)
        planned = (run.config.get("optim") or {}).get("epochs")
        for seed in sorted(set(expected_seeds(run)) | set(records)):
            r = records.get(seed)
            if r is None:
                lines.append(f"| {label} | {seed} | missing |" + " - |" * 8)
                continue
            if not r.finished:
                of = f" of {planned}" if planned else ""
                lines.append(f"| {label} | {seed} | training, {r.epochs_done} epoch(s){of} | - "
                             f"| {_pct(r.last_epoch.get('val_acc'))} |" + " - |" * 6)
                continue
            v = r.values
            time = "-" if v.get("train_time") is None else f"{v['train_time'] / 60:.1f}"
            mismatch = mismatch_cell(v.get("spike_mismatch"), v.get("spike_mismatch_float64"))
            commit = commit_text(v.get("commit"), v.get("commit_history"))
            lines.append(f"| {label} | {seed} | finished | {_pct(v.get('final_test_acc'))} | "
                         f"{_pct(v.get('final_val_acc'))} | {_pct(v.get('test_acc_flip'))} | "
                         f"{_pct(v.get('folded_test_acc'))} | {mismatch} | {time} | "
                         f"{runtime_text(v.get('runtime'))} | {commit} |")
    return "\n".join(lines)


def comparison_table(pairs: Sequence[tuple[str, Run, str, Run]],
                     key: str = "final_test_acc", level: float = 0.95,
                     reference: dict[str, str] | None = None) -> str:
    """One row per ``(baseline label, baseline, variant label, variant)`` pair: each run's mean
    ± std (n) of ``key``, the difference ``variant - baseline`` and its Welch interval.

    Args:
        key: An accuracy of :data:`SEED_KEYS` (shown in %, the difference in points) or
            ``"spike_rate"`` (spikes per neuron and step, three decimals).
        reference: Optional ``{variant label: text}``, an extra column (e.g. the paper's
            difference).
    """
    acc = key.endswith("_acc")
    scale, digits = (_ACC, 2) if acc else (1.0, 3)
    unit, diff_unit = (" (%)", " (points)") if acc else ("", "")
    head = (f"| variant − baseline | baseline{unit} | variant{unit} | difference{diff_unit} | "
            f"{round(100 * level)}% CI (Welch) | df |")
    if reference is not None:
        head += " paper difference |"
    lines = [head, "|" + " --- |" * (6 + (reference is not None))]
    for base_label, base, var_label, var in pairs:
        c = compare_runs(base, var, key, level)
        w = c["welch"]

        def side(s: dict[str, Any]) -> str:
            return f"{mean_std_text(s['values'], scale=scale, digits=digits)} " \
                   f"(n={len(s['values'])})"

        def signed(value: float) -> str:
            return f"{scale * value:+.{digits}f}"

        diff = "-" if w["diff"] is None else signed(w["diff"])
        ci = "-" if w["low"] is None else f"[{signed(w['low'])}, {signed(w['high'])}]"
        df = "-" if w["df"] is None else f"{w['df']:.1f}"
        row = f"| {var_label} − {base_label} | {side(c['baseline'])} | {side(c['variant'])} | " \
              f"{diff} | {ci} | {df} |"
        if reference is not None:
            row += f" {reference.get(var_label, '-')} |"
        lines.append(row)
    return "\n".join(lines)
