"""Inline SVG: round ticks, spike-keeping downsampling, escaping, layering — on literal values."""

import math

import pytest

from alignpipe.report import svg


@pytest.mark.parametrize(("lo", "hi", "ticks"), [
    (0, 1, [0, 0.25, 0.5, 0.75, 1.0]),
    (0, 10, [0, 2.5, 5.0, 7.5, 10.0]),
    (-0.3, 1.7, [0, 0.5, 1.0, 1.5]),
    (3, 3, [3]),
    (0, 183, [0, 50, 100, 150]),
], ids=["unit", "ten", "negative-start", "flat", "steps"])
def test_nice_ticks_are_round_and_inside(lo, hi, ticks):
    assert svg.nice_ticks(lo, hi, 5) == pytest.approx(ticks)


def test_downsample_keeps_spikes_and_the_last_point():
    pts = [(float(i), 0.0) for i in range(1000)]
    pts[437] = (437.0, 50.0)
    pts[802] = (802.0, -9.0)
    out = svg.downsample(pts, 100)
    assert len(out) <= 102
    assert (437.0, 50.0) in out and (802.0, -9.0) in out and out[-1] == (999.0, 0.0)
    assert [x for x, _ in out] == sorted(x for x, _ in out)
    assert svg.downsample(pts[:50], 100) == pts[:50]


def test_chart_escapes_labels_and_says_what_it_could_not_draw():
    hostile = '<script>alert(1)</script>'
    out = svg.chart(svg.Chart(hostile, [svg.Series(hostile, [(0, 1.0), (1, math.nan), (2, 3.0)]),
                                        svg.Series("b", [(0, 2.0), (2, math.inf)])]))
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "(2 non-finite values not drawn)" in out
    assert out.count("<polyline") == 1  # b has one finite point: a marker, not a line
    assert "no finite values" in svg.chart(svg.Chart("empty", [svg.Series("a", [(0, math.nan)])]))


def test_layers_put_each_node_right_of_its_deepest_input():
    edges = [("data", "base"), ("base", "sft"), ("sft", "ppo"), ("data", "ppo"), ("sft", "eval"), ("ppo", "eval")]
    assert svg.layers(["data", "base", "sft", "ppo", "eval", "alone"], edges) == {
        "data": 0, "base": 1, "sft": 2, "ppo": 3, "eval": 4, "alone": 0}


def test_dag_draws_every_node_and_edge_escaped():
    nodes = [svg.Node("a", "a<b>", "t"), svg.Node("b", "b", "t")]
    out = svg.dag(nodes, [("a", "b", "a.out → x")])
    assert out.count("<rect") == 2 and out.count("marker-end=") == 1 and "a&lt;b&gt;" in out
