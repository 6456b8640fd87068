import pytest

from alignpipe.train import EpochBatches, LengthGroupedBatches, sub_seed, train_eval_split


def drain(order: EpochBatches, k: int) -> list[tuple[int, int, list[int]]]:
    return [(b.epoch, b.position, b.indices) for b in (order.next() for _ in range(k))]


def test_every_example_once_per_epoch_in_a_fresh_order_each_epoch():
    order = EpochBatches(10, 3, seed=7)
    assert order.batches_per_epoch == 4
    batches = drain(order, 8)
    assert [(e, pos, len(ix)) for e, pos, ix in batches] == [
        (0, 0, 3), (0, 3, 3), (0, 6, 3), (0, 9, 1), (1, 0, 3), (1, 3, 3), (1, 6, 3), (1, 9, 1)]
    epoch0 = [i for e, _, ix in batches if e == 0 for i in ix]
    epoch1 = [i for e, _, ix in batches if e == 1 for i in ix]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1 and epoch0 == order.permutation(0)


def test_resume_from_state_dict_continues_the_same_sequence():
    straight = drain(EpochBatches(10, 4, seed=1), 9)
    first = EpochBatches(10, 4, seed=1)
    head = drain(first, 4)  # stops inside epoch 1
    resumed = EpochBatches(10, 4, seed=1)
    resumed.load_state_dict(first.state_dict())
    assert head + drain(resumed, 5) == straight


def test_order_depends_only_on_seed_and_epoch():
    assert EpochBatches(50, 5, seed=3).permutation(2) == EpochBatches(50, 7, seed=3).permutation(2)
    assert EpochBatches(50, 5, seed=3).permutation(2) != EpochBatches(50, 5, seed=4).permutation(2)
    assert EpochBatches(5, 2, seed=3, shuffle=False).permutation(9) == [0, 1, 2, 3, 4]


def test_drop_last_and_batch_larger_than_data():
    assert drain(EpochBatches(5, 2, 0, shuffle=False, drop_last=True), 3) == [
        (0, 0, [0, 1]), (0, 2, [2, 3]), (1, 0, [0, 1])]
    assert [len(ix) for _, _, ix in drain(EpochBatches(3, 8, 0), 2)] == [3, 3]


def test_a_checkpoint_for_other_data_is_refused():
    order = EpochBatches(10, 4, seed=1)
    with pytest.raises(ValueError, match=r"n 12 \(checkpoint\) vs 10 \(now\)"):
        order.load_state_dict({**order.state_dict(), "n": 12})


def test_train_eval_split_is_seeded_disjoint_and_sized():
    train, held = train_eval_split(20, 0.1, seed=5)
    assert len(held) == 2 and sorted(train + held) == list(range(20))
    assert train_eval_split(20, 0.1, seed=5) == (train, held) != train_eval_split(20, 0.1, seed=6)
    assert train_eval_split(3, 0.01, seed=0)[1] != []  # a positive fraction holds out at least one
    assert train_eval_split(2, 0.9, seed=0)[0] != []  # and train keeps at least one
    assert train_eval_split(4, 0.0, seed=0) == ([0, 1, 2, 3], [])


def test_sub_seed_is_stable_and_separates_keys():
    assert sub_seed(0, "epoch", 1) == 7640573992448688232
    assert len({sub_seed(0, "epoch", e) for e in range(100)}) == 100
    assert sub_seed(0, "a", 1) != sub_seed(1, "a", 1) and 0 <= sub_seed(2**40, "x") < 2**63


def test_length_grouping_keeps_every_example_once_per_epoch_with_less_padding():
    lengths = [(i * 37) % 50 + 1 for i in range(103)]
    order = LengthGroupedBatches(lengths, 8, seed=2, group_batches=4)
    assert order.batches_per_epoch == 13
    batches = drain(order, 26)
    for epoch in (0, 1):
        seen = [i for e, _, ix in batches if e == epoch for i in ix]
        assert sorted(seen) == list(range(103))
    assert [len(ix) for _, _, ix in batches[:13]] == [8] * 12 + [7]  # the short batch stays last
    assert [ix for _, _, ix in batches[:13]] != [ix for _, _, ix in batches[13:]]

    def padding(bs):
        return sum(len(ix) * max(lengths[i] for i in ix) - sum(lengths[i] for i in ix) for _, _, ix in bs)

    assert padding(batches[:13]) < padding(drain(EpochBatches(103, 8, seed=2), 13)) / 3


def test_length_grouping_resumes_and_refuses_other_lengths():
    lengths = [i % 17 + 1 for i in range(40)]
    straight = drain(LengthGroupedBatches(lengths, 6, seed=1), 11)
    first = LengthGroupedBatches(lengths, 6, seed=1)
    head = drain(first, 4)
    resumed = LengthGroupedBatches(lengths, 6, seed=1)
    resumed.load_state_dict(first.state_dict())
    assert head + drain(resumed, 7) == straight
    with pytest.raises(ValueError, match="lengths_hash"):
        LengthGroupedBatches([x + 1 for x in lengths], 6, seed=1).load_state_dict(first.state_dict())
