"""The Welch comparison: our Student-t quantile against tables, the interval by hand."""

import math

import pytest

from mpbn.analysis.compare import runtime_text, student_t_cdf, student_t_ppf, welch_ci


@pytest.mark.parametrize("p, df, expected", [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 30, 2.042272),
    (0.995, 10, 3.169273), (0.95, 5, 2.015048), (0.9, 1, 3.077684),
])
def test_t_quantile_matches_tables(p, df, expected):
    assert student_t_ppf(p, df) == pytest.approx(expected, abs=5e-7)
    assert student_t_ppf(1 - p, df) == pytest.approx(-expected, abs=5e-7)
    assert student_t_cdf(expected, df) == pytest.approx(p, abs=1e-7)


def test_t_quantile_cauchy_normal_limits_and_fractional_df():
    # df = 1 is the Cauchy distribution: ppf(p) = tan(pi (p - 1/2)).
    assert student_t_ppf(0.8, 1) == pytest.approx(math.tan(math.pi * 0.3), rel=1e-10)
    assert student_t_ppf(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)  # the normal's
    assert student_t_ppf(0.5, 3.3) == 0.0
    # Welch degrees of freedom are not integers: between its neighbours, and scipy's value.
    assert student_t_ppf(0.975, 4) < student_t_ppf(0.975, 3.5) < student_t_ppf(0.975, 3)
    assert student_t_ppf(0.975, 242 / 65) == pytest.approx(2.8598170480254104, abs=1e-9)
    with pytest.raises(ValueError):
        student_t_ppf(1.0, 3)


def test_t_quantile_agrees_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.975, 0.999):
        for df in (0.7, 1.3, 2.5, 7.9, 55.0):
            assert student_t_ppf(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)


def test_welch_interval_by_hand():
    # baseline mean 0.82, sample variance 0.0004; variant mean 0.87, sample variance 0.0007.
    # se^2 = 0.0004/3 + 0.0007/3 = 0.0011/3; df = (0.0011/3)^2 / ((0.0004/3)^2/2 + (0.0007/3)^2/2)
    #      = 2 * 0.0011^2 / (0.0004^2 + 0.0007^2) = 242/65 = 3.7231; t(0.975, 242/65) = 2.859817.
    w = welch_ci([0.80, 0.82, 0.84], [0.85, 0.86, 0.90])
    se = math.sqrt(0.0011 / 3)
    assert w["diff"] == pytest.approx(0.05)
    assert w["se"] == pytest.approx(se)
    assert w["df"] == pytest.approx(242 / 65)
    assert w["t"] == pytest.approx(2.859817, abs=1e-6)
    assert (w["low"], w["high"]) == pytest.approx((0.05 - 2.859817 * se, 0.05 + 2.859817 * se))
    assert w["low"] == pytest.approx(-0.0047613, abs=1e-6)  # the interval still contains 0
    assert isinstance(w["df"], float)


def test_welch_equal_variances_and_sizes_gives_pooled_df_and_edge_cases():
    w = welch_ci([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert w["df"] == pytest.approx(4.0)  # equal n and variance: n_b + n_v - 2
    assert w["high"] - w["diff"] == pytest.approx(2.776445 * math.sqrt(2 / 3), abs=1e-6)
    one = welch_ci([0.8], [0.85, 0.9])
    assert one["diff"] == pytest.approx(0.075) and one["low"] is None and one["df"] is None
    assert welch_ci([], [0.9])["diff"] is None
    flat = welch_ci([0.5, 0.5], [0.6, 0.6])
    assert flat["se"] == 0.0 and flat["low"] == flat["high"] == pytest.approx(0.1)


def test_runtime_text_names_device_threads_compile_and_allocator():
    assert runtime_text(None) == "-"  # a record written before seeds recorded it
    assert runtime_text({"device": "cpu", "processes": 1, "threads": 2, "compile": True,
                         "grad_checkpointing": 0, "allocator": "glibc malloc"}) \
        == "cpu, 2 threads, compiled, glibc malloc"
    assert runtime_text({"device": "cuda:0", "processes": 4, "threads": 8, "compile": False,
                         "grad_checkpointing": 2, "allocator": "jemalloc (LD_PRELOAD=x)"}) \
        == "cuda:0 x4, 8 threads, eager, grad checkpointing 2, jemalloc (LD_PRELOAD=x)"
