from hypothesis import given
from hypothesis import strategies as st

from alignpipe.pipeline.fingerprint import canonical_json, derive_seed, fingerprint

scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                    st.text(max_size=8), st.none())
params_st = st.dictionaries(st.text(min_size=1, max_size=6), scalars, max_size=6)


@given(params_st)
def test_param_order_is_irrelevant(params):
    reordered = dict(reversed(list(params.items())))
    assert fingerprint("sft", "1", params, {}, 0) == fingerprint("sft", "1", reordered, {}, 0)


@given(params_st, st.text(min_size=1, max_size=6), scalars, scalars)
def test_any_param_value_change_changes_it(params, key, a, b):
    if canonical_json(a) == canonical_json(b):
        return
    assert fingerprint("sft", "1", {**params, key: a}, {}, 0) != fingerprint("sft", "1", {**params, key: b}, {}, 0)


@given(st.text(max_size=10), st.text(max_size=10))
def test_input_ids_change_it(a, b):
    if a != b:
        assert fingerprint("x", "1", {}, {"m": a}, 0) != fingerprint("x", "1", {}, {"m": b}, 0)


def test_type_version_seed_and_input_names_change_it():
    base = fingerprint("sft", "1", {"lr": 0.1}, {"model": "abc"}, 0)
    assert fingerprint("reward", "1", {"lr": 0.1}, {"model": "abc"}, 0) != base
    assert fingerprint("sft", "2", {"lr": 0.1}, {"model": "abc"}, 0) != base
    assert fingerprint("sft", "1", {"lr": 0.1}, {"model": "abc"}, 1) != base
    assert fingerprint("sft", "1", {"lr": 0.1}, {"base": "abc"}, 0) != base


def test_derived_seeds_are_per_stage_and_stable():
    assert derive_seed(0, "sft") == derive_seed(0, "sft")
    assert derive_seed(0, "sft") != derive_seed(0, "ppo")
    assert derive_seed(0, "sft") != derive_seed(1, "sft")
