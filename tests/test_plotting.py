"""The house style's log axes: plain labels at 1, 2 and 5 times the powers of ten."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from repro.plotting import extend_to_tick, log_scale  # noqa: E402


def visible_labels(axis, which="major"):
    ticks = axis.get_majorticklabels() if which == "major" else axis.get_minorticklabels()
    low, high = axis.get_view_interval()
    return [t.get_text() for t in ticks if t.get_text() and low <= t.get_position()[axis.axis_name == "y"] <= high]


@pytest.mark.parametrize("axis", ["x", "y"])
def test_less_than_a_decade_gets_plain_labels_and_no_minor_ones(axis):
    fig, ax = plt.subplots()
    values = [2.5, 40.0]
    ax.plot(values, values)
    log_scale(ax, axis)
    fig.canvas.draw()
    ticks = getattr(ax, f"{axis}axis")
    assert getattr(ax, f"get_{axis}scale")() == "log"
    assert visible_labels(ticks) == ["5", "10", "20"]
    assert visible_labels(ticks, "minor") == []
    plt.close(fig)


def test_small_values_are_written_as_decimals():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.005, 0.04])
    log_scale(ax)
    fig.canvas.draw()
    assert visible_labels(ax.yaxis) == ["0.005", "0.01", "0.02"]
    plt.close(fig)


def test_an_unknown_axis_is_refused():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="axis must be 'x' or 'y', got 'z'"):
        log_scale(ax, "z")
    assert ax.get_yscale() == "linear"
    plt.close(fig)


@pytest.mark.parametrize("top,tick", [(0.037, 0.05), (0.05, 0.05), (0.051, 0.1), (3.0, 5.0), (120.0, 200.0)])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_extend_to_tick_reaches_the_first_labelled_tick_above_the_data(axis, top, tick):
    fig, ax = plt.subplots()
    values = [top / 20, top]
    ax.plot(values, values)
    log_scale(ax, axis)
    extend_to_tick(ax, axis)
    low, high = getattr(ax, f"get_{axis}lim")()
    assert high >= tick * (1 - 1e-9)
    assert high < tick * 2  # stretched to that tick, not to the next one
    plt.close(fig)


def test_extend_to_tick_rejects_a_bad_axis_and_non_positive_data():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [-1, 0])
    with pytest.raises(ValueError, match="'z'"):
        extend_to_tick(ax, "z")
    with pytest.raises(ValueError, match="positive"):
        extend_to_tick(ax, "y")
    plt.close(fig)
