import pytest

from alignpipe.data import (
    DataError,
    Preference,
    PromptCompletion,
    SkipCounter,
    parse_preferences,
    parse_prompts,
    parse_sft,
    parse_texts,
)

CONV = [{"role": "user", "content": "Review the lamp."}]


def test_sft_prompt_completion_and_chat_forms():
    records = [
        {"prompt": "Review of the lamp:", "completion": " Great.", "extra": 1},
        {"messages": [*CONV, {"role": "assistant", "content": "Great."}]},
        {"prompt": CONV, "completion": [{"role": "assistant", "content": "Fine."}]},
    ]
    assert parse_sft(records, "demos.jsonl") == [
        PromptCompletion("Review of the lamp:", " Great."),
        PromptCompletion(CONV, "Great."),
        PromptCompletion(CONV, "Fine."),
    ]


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"prompt": "p"}, r"demos\.jsonl: record 1, field 'completion': missing\. Fix: add a 'completion' field"),
        ({"prompt": "  ", "completion": "c"}, r"record 1, field 'prompt': empty prompt\. Fix: give 'prompt' non"),
        ({"prompt": 3, "completion": "c"}, r"field 'prompt': expected a string, got int"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"field 'messages\[0\]': not a valid message"),
        ({"messages": CONV}, r"field 'messages': conversation does not end with an assistant turn"),
        ({"prompt": [{"role": "assistant", "content": "x"}], "completion": "c"}, "ends with an assistant turn"),
    ],
    ids=["missing-completion", "empty-prompt", "wrong-type", "bad-role", "no-reply", "prompt-ends-assistant"],
)
def test_sft_errors_name_file_record_field_and_fix(record, match):
    with pytest.raises(DataError, match=match):
        parse_sft([{"prompt": "ok", "completion": " ok"}, record], "demos.jsonl")


def test_texts_and_prompts():
    assert parse_texts([{"text": "a b"}], "corpus") == ["a b"]
    assert parse_prompts([{"prompt": "p"}, {"messages": CONV}], "prompts") == ["p", CONV]
    with pytest.raises(DataError, match=r"prompts: record 0, field 'prompt': missing"):
        parse_prompts([{"text": "p"}], "prompts")


def test_preferences_explicit_and_conversational():
    reply = [{"role": "assistant", "content": "Good."}]
    records = [
        {"prompt": "Review of the mug:", "chosen": " Nice.", "rejected": " Bad."},
        {"prompt": CONV, "chosen": reply, "rejected": [{"role": "assistant", "content": "Bad."}]},
        {"chosen": [*CONV, *reply], "rejected": [*CONV, {"role": "assistant", "content": "Bad."}]},
    ]
    assert parse_preferences(records, "pairs") == [
        Preference("Review of the mug:", " Nice.", " Bad."),
        Preference(CONV, "Good.", "Bad."),
        Preference(CONV, "Good.", "Bad."),
    ]


def test_preferences_anthropic_hh_transcripts():
    shared = "\n\nHuman: Is the lamp good?\n\nAssistant: Yes.\n\nHuman: Really?\n\nAssistant:"
    pairs = parse_preferences([{"chosen": shared + " Yes, it is.", "rejected": shared + " No."}], "hh")
    assert pairs == [Preference(shared, " Yes, it is.", " No.")]
    with pytest.raises(DataError, match=r"hh: record 0, field 'rejected': chosen and rejected transcripts differ"):
        parse_preferences([{"chosen": shared + " a", "rejected": "\n\nHuman: x\n\nAssistant: b"}], "hh")
    with pytest.raises(DataError, match=r"field 'prompt': missing, and chosen/rejected are not HH transcripts"):
        parse_preferences([{"chosen": "a", "rejected": "b"}], "hh")


def test_preferences_implicit_prompt_must_match():
    bad = {"chosen": [*CONV, {"role": "assistant", "content": "a"}],
           "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match="do not share the same prompt turns"):
        parse_preferences([bad], "pairs")


def test_skip_counter_skips_below_threshold_and_counts_reasons():
    records = [{"prompt": "p", "completion": " c"}] * 97 + [{"prompt": "p"}, {"prompt": "", "completion": "c"},
                                                         {"prompt": "p"}]
    skips = SkipCounter("demos.jsonl", max_fraction=0.05)
    assert len(parse_sft(records, "demos.jsonl", skips)) == 97
    assert skips.summary() == {"seen": 100, "skipped": 3, "by_reason": {"empty": 1, "missing_field": 2}}


def test_skip_counter_raises_above_threshold():
    records = [{"prompt": "p", "completion": " c"}] * 8 + [{"prompt": "p"}] * 2
    with pytest.raises(DataError, match=r"demos\.jsonl: 2 of 10 records skipped \(20\.0% > allowed 5\.0%\) — "
                                        r"missing_field: 2 \(first: demos\.jsonl: record 8, field 'completion'"):
        parse_sft(records, "demos.jsonl", SkipCounter("demos.jsonl", max_fraction=0.05))


def test_identical_chosen_and_rejected_are_refused_or_skipped_as_identical():
    from alignpipe.data import SkipCounter, parse_preferences

    recs = [{"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "q", "chosen": "a", "rejected": "b"}]
    with pytest.raises(DataError, match=r"p.jsonl: record 0, field 'rejected': identical to chosen, so the pair "
                                        r"states no preference. Fix: drop the pair"):
        parse_preferences(recs, "p.jsonl")
    skips = SkipCounter("p.jsonl", max_fraction=0.5)
    assert [p.chosen for p in parse_preferences(recs, "p.jsonl", skips)] == ["a"]
    assert skips.summary()["by_reason"] == {"identical": 1}
    with pytest.raises(DataError, match=r"1 of 2 records skipped \(50.0% > allowed 1.0%\) — identical: 1"):
        parse_preferences(recs, "p.jsonl", SkipCounter("p.jsonl", max_fraction=0.01))


def test_parse_chosen_reads_every_preference_format_as_demonstrations():
    from alignpipe.data import parse_chosen

    chat = [{"role": "user", "content": "hi"}]
    recs = [{"prompt": "q", "chosen": "good", "rejected": "bad"},
            {"chosen": chat + [{"role": "assistant", "content": "hello!"}],
             "rejected": chat + [{"role": "assistant", "content": "go away"}]},
            {"chosen": "\n\nHuman: hey\n\nAssistant: yo", "rejected": "\n\nHuman: hey\n\nAssistant: no"}]
    demos = parse_chosen(recs, "p.jsonl")
    assert [(d.prompt, d.completion) for d in demos] == [("q", "good"), (chat, "hello!"),
                                                         ("\n\nHuman: hey\n\nAssistant:", " yo")]


def test_sft_parser_points_preference_records_to_use_chosen():
    from alignpipe.data import parse_sft

    with pytest.raises(DataError, match=r"field 'completion': missing: this is a preference pair \(chosen/rejected\)"
                                        r", not a demonstration. Fix: .* set the sft stage's param `use: chosen`"):
        parse_sft([{"prompt": "q", "chosen": "a", "rejected": "b"}], "p.jsonl")
