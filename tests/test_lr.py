"""Tests for ftcourse.lr: the schedules against hand-computed values."""

import pytest

from ftcourse.lr import Constant, Cosine, OneCycle, SlantedTriangular, get_schedule


def factors(schedule, total):
    return [schedule(step, total) for step in range(total)]


# --- Schedules: values computed by hand ------------------------------------------------------------------------------

def test_constant_warms_up_linearly_then_stays_at_one():
    schedule = Constant(warmup=0.1)  # 10 warm-up steps of 100: 1/11, 2/11, ..., 10/11, then 1
    assert schedule(0, 100) == pytest.approx(1 / 11)
    assert schedule(9, 100) == pytest.approx(10 / 11)
    assert schedule(10, 100) == schedule(99, 100) == 1.0
    assert Constant()(0, 100) == 1.0


def test_cosine_is_half_way_down_in_the_middle_of_its_decay_and_reaches_final_at_the_end():
    schedule = Cosine(warmup=0.1, final=0.1)  # 10 warm-up steps, then a half cosine over the other 90
    assert schedule(0, 100) == pytest.approx(1 / 11)
    assert schedule(10, 100) == pytest.approx(1.0)
    assert schedule(55, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # t = 45 / 90 = 1/2: cos(pi / 2) = 0
    assert schedule(100, 100) == pytest.approx(0.1)
    assert Cosine(warmup=0.0)(0, 100) == pytest.approx(1.0)


def test_onecycle_rises_from_one_over_div_to_one_then_falls_to_one_over_final_div():
    schedule = OneCycle(peak_at=0.2, div=25, final_div=1e4)  # peak at step 20 of 100
    assert schedule(0, 100) == pytest.approx(1 / 25)
    assert schedule(10, 100) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert schedule(20, 100) == pytest.approx(1.0)
    assert schedule(60, 100) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5)  # half way down the cosine
    assert schedule(100, 100) == pytest.approx(1e-4)


def test_slanted_triangular_matches_ulmfit_with_t_1000_cut_frac_01_ratio_32():
    schedule = SlantedTriangular(cut_frac=0.1, ratio=32)  # cut = 100; decay over 100 * (1/0.1 - 1) = 900 steps
    assert schedule(0, 1000) == pytest.approx(1 / 32)
    assert schedule(50, 1000) == pytest.approx((1 + 0.5 * 31) / 32)
    assert schedule(100, 1000) == pytest.approx(1.0)
    assert schedule(550, 1000) == pytest.approx((1 + 0.5 * 31) / 32)  # p = 1 - 450/900
    assert schedule(999, 1000) == pytest.approx((1 + 31 / 900) / 32)  # the last step fit takes: near 1/32
    assert schedule(1000, 1000) == pytest.approx(1 / 32)


@pytest.mark.parametrize("schedule, peak", [(Constant(warmup=0.1), 10), (Cosine(warmup=0.1), 10),
                                            (OneCycle(peak_at=0.25), 25), (SlantedTriangular(cut_frac=0.1), 10)],
                         ids=["constant", "cosine", "onecycle", "slanted"])
def test_schedules_rise_to_their_peak_then_never_rise_again(schedule, peak):
    values = factors(schedule, 100)
    assert max(values) == pytest.approx(1.0) and values[peak] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values[:peak], values[1:peak + 1]))  # strictly up during the warm-up
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1:]))  # never up afterwards
    assert all(v > 0 for v in values)


def test_get_schedule_builds_named_schedules_and_passes_functions_through():
    assert get_schedule("constant") == Constant()
    assert get_schedule("cosine") == Cosine()
    assert get_schedule("onecycle") == OneCycle()
    assert get_schedule("slanted") == SlantedTriangular()

    def halve(step, total):
        return 0.5

    assert get_schedule(halve) is halve


def test_get_schedule_refuses_an_unknown_name_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown schedule 'linear'.*'cosine'"):
        get_schedule("linear")
