import pytest

from alignpipe.pipeline.graph import ancestors, descendants, find_cycle, select, topo_order

# sft -> gen -> label -> reward -> ppo -> eval, with sft also feeding ppo and eval (the RLHF shape)
RLHF = {"base": set(), "sft": {"base"}, "gen": {"sft"}, "label": {"gen"}, "reward": {"label"},
        "ppo": {"sft", "reward"}, "eval": {"ppo", "sft", "reward"}}


def test_topo_order_puts_dependencies_first_and_is_stable():
    assert topo_order(RLHF) == ["base", "sft", "gen", "label", "reward", "ppo", "eval"]
    assert topo_order({"b": set(), "a": set(), "c": {"a", "b"}}) == ["b", "a", "c"]


@pytest.mark.parametrize("deps,cycle", [
    ({"a": {"a"}}, ["a", "a"]),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"x": set(), "a": {"c"}, "b": {"a"}, "c": {"b"}}, ["a", "c", "b", "a"]),
], ids=["self", "two", "three"])
def test_find_cycle(deps, cycle):
    assert find_cycle(deps) == cycle


def test_no_cycle():
    assert find_cycle(RLHF) is None


def test_ancestors_descendants():
    assert ancestors(RLHF, "ppo") == {"base", "sft", "gen", "label", "reward"}
    assert descendants(RLHF, "label") == {"reward", "ppo", "eval"}
    assert descendants(RLHF, "eval") == set()


@pytest.mark.parametrize("kw,runnable,forced", [
    ({}, set(RLHF), set()),
    ({"until": "reward"}, {"base", "sft", "gen", "label", "reward"}, set()),
    ({"only": "ppo"}, {"ppo"}, set()),
    ({"from_": "reward"}, set(RLHF), {"reward", "ppo", "eval"}),
    ({"force": ["gen"]}, set(RLHF), {"gen"}),
    ({"from_": "reward", "until": "ppo"}, {"base", "sft", "gen", "label", "reward", "ppo"}, {"reward", "ppo"}),
], ids=["all", "until", "only", "from", "force", "from+until"])
def test_select(kw, runnable, forced):
    assert select(RLHF, **kw) == (runnable, forced)
