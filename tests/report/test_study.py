"""The overoptimization study in a report: points from bon summaries and evaluated PPO branches, Gao's fits."""

import math

import pytest
from recorded import GOLD_BON, GOLD_RL, study_run

from alignpipe.report import render_html
from alignpipe.report.collect import collect
from alignpipe.report.study import study


def test_points_and_fits_from_a_recorded_sweep(tmp_path):
    ws = tmp_path / "ws"
    study_run(ws)
    st = study(collect(ws))
    bon, rl = st.families
    assert (bon.form, rl.form) == ("bon", "rl")
    assert [p.label for p in bon.points] == [f"bon@n={n}" for n in (1, 2, 4, 8, 16, 32)]
    assert bon.points[0].d == 0.0 and bon.points[-1].d == pytest.approx(math.sqrt(math.log(32) - 31 / 32))
    assert [p.label for p in rl.points] == [f"rlhf@kl_target={t}" for t in (1, 2, 4, 8)]
    assert rl.points[2].d == pytest.approx(math.sqrt(3.6)) and rl.points[2].proxy == pytest.approx(2 * rl.points[2].d)
    for fam, (alpha, beta) in ((bon, GOLD_BON), (rl, GOLD_RL)):
        gold = fam.fits["gold"]
        assert (gold.alpha, gold.beta, gold.r2) == (pytest.approx(alpha), pytest.approx(beta), pytest.approx(1.0))
        assert fam.fits["proxy"].alpha == pytest.approx(2.0) and fam.fits["proxy"].beta == pytest.approx(0, abs=1e-9)
    assert bon.fits["gold"].n == 5  # n = 1 (d = 0) is drawn, not fitted


def test_each_proxy_reward_model_gets_its_own_family(tmp_path):
    ws = tmp_path / "ws"
    study_run(ws, bon_proxies=("rmA", "rmB"))
    families = study(collect(ws)).families
    assert [(f.form, f.proxy, len(f.points)) for f in families] == [("bon", "rmA", 6), ("bon", "rmB", 6),
                                                                     ("rl", "", 4)]
    assert "best-of-n (proxy rmB): gain over πSFT" in render_html(ws)


def test_report_shows_the_study_with_its_fits(tmp_path):
    ws = tmp_path / "ws"
    study_run(ws)
    page = render_html(ws)
    assert "Overoptimization: gold and proxy reward vs distance from πSFT" in page
    assert "best-of-n: R(d) = d(α − β·d)" in page and "PPO: R(d) = d(α − β·log d)" in page
    assert "α = 0.500 [0.500, 0.500], β = 0.100 [0.100, 0.100]; R² = 1.000" in page
    assert f"fitted peak at d = {0.5 / (2 * 0.1):.2f}" in page and "none (still rising)" in page  # proxy: β = 0
    assert page.count("gold fit</title>") == 2 and page.count(">proxy (Rφ)</text>") == 2


def test_the_built_in_example_is_the_default_pipeline_plus_the_sweeps():
    import yaml

    from alignpipe import api

    pipe = api.load(builtin="overoptimization")
    ppo = [n for n in pipe.order if n.startswith("ppo@")]
    bon = [n for n in pipe.order if n.startswith("bon@")]
    assert len(ppo) >= 5 and len(bon) >= 5
    assert {pipe.stages[n].params.kl_target for n in ppo} == {float(n.split("=")[1]) for n in ppo}
    assert len({pipe.stages[n].seed for n in ppo}) == 1  # branches differ in their KL target only
    evaluate = pipe.stages["evaluate"]
    assert sorted(evaluate.inputs) == sorted(["sft", "reward_model", "prompts", *(f"rlhf@{n[4:]}" for n in ppo)])
    default = yaml.safe_load(api.builtin_path("default").read_text())["stages"]
    study = yaml.safe_load(api.builtin_path("overoptimization").read_text())["stages"]
    for name in ("data", "base", "sft", "pairs", "labels"):  # one workspace: these are cache hits
        assert study[name] == default[name], name
    assert study["reward"]["params"] == {**default["reward"]["params"], "eval_fraction": 0.95}  # a starved proxy
