"""Bad data and bad models given to real stages (`alignpipe stage run`, manual mode): exit 2 before any
training, a message naming the stage, the input, the file and the record or field, and the fix; no output and
no leftover work directory."""

import json
from pathlib import Path

import pytest
from badinput import Case, chain, copy_tree, ids, run_case, write


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


DEMO = {"prompt": "Review of the lamp:", "completion": " It is great."}
PAIR = {"prompt": "Review of the lamp:", "chosen": " Great.", "rejected": " Bad."}


def sft(data: str, *params: str) -> list[str]:
    return ["stage", "run", "sft", "-i", "model={gpt2}", "-i", f"data={data}", *params, "-p", "steps=1", "-o", "out"]


DATA = [
    Case("data-missing", sft("nope.jsonl"), 2, [r"--input data=nope.jsonl: no such file or directory"]),
    Case("data-unsupported-type", sft("d.txt"), 2,
         [r"stage 'sft' input 'data' \(external input [0-9a-f]{12} at .*d.txt\): .*d.txt: unsupported file type "
          r"'\.txt'\. Fix: use \.jsonl, \.json or \.parquet"], setup=write("d.txt", "hello\n")),
    Case("data-invalid-json-line", sft("d.jsonl"), 2, [r"d.jsonl: record 1: line 2 is not valid JSON"],
         setup=write("d.jsonl", jsonl(DEMO) + "{oops\n")),
    Case("data-json-not-a-list", sft("d.json"), 2, [r"d.json: top level is a dict, not a list of records"],
         setup=write("d.json", json.dumps({"prompt": "x"}))),
    Case("data-not-utf8", sft("d.jsonl"), 2, [r"d.jsonl: .*not (valid )?UTF-8"],
         setup=write("d.jsonl", jsonl(DEMO).encode() + b'{"prompt": "\xff\xfe", "completion": "x"}\n')),
    Case("data-wrong-field-type", sft("d.jsonl"), 2,
         [r"d.jsonl: record 0, field 'completion': expected a string, got int. Fix: make 'completion' a string"],
         setup=write("d.jsonl", jsonl({"prompt": "p", "completion": 3}, DEMO))),
    Case("data-missing-field", sft("d.jsonl"), 2, [r"record 0, field 'completion': missing"],
         setup=write("d.jsonl", jsonl({"prompt": "p"}, DEMO))),
    Case("data-empty-file", sft("d.jsonl"), 2, [r"stage 'sft' input 'data' .*: no usable records in .*d.jsonl"],
         setup=write("d.jsonl", "")),
    Case("data-preferences-without-use-chosen", sft("d.jsonl"), 2,
         [r"field 'completion': missing: this is a preference pair .* set the sft stage's param `use: chosen`"],
         setup=write("d.jsonl", jsonl(PAIR))),
    Case("data-chat-without-template", sft("d.jsonl"), 2,
         [r"holds chat conversations \(record 0\) but the tokenizer of input 'model' .* has no chat template"],
         setup=write("d.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}))),
    Case("data-bad-chat-role", sft("d.jsonl"), 2, [r"field 'messages\[0\]': not a valid message"],
         setup=write("d.jsonl", jsonl({"messages": [{"role": "robot", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}))),
    Case("data-too-long", sft("d.jsonl", "-p", "max_len=8"), 2, [r"records skipped .* too_long"],
         setup=write("d.jsonl", jsonl({"prompt": "Review of the lamp: " * 10, "completion": " ok"}, DEMO))),
    Case("prefs-all-identical", ["stage", "run", "reward", "-i", "model={gpt2}", "-i", "data=p.jsonl", "-p",
                                 "steps=1", "-o", "out"], 2,
         [r"p.jsonl: 2 of 2 records skipped \(100.0% > allowed 1.0%\) — identical: 2 \(first: .*record 0, field "
          r"'rejected': identical to chosen"],
         setup=write("p.jsonl", jsonl({**PAIR, "rejected": PAIR["chosen"]}, {**PAIR, "chosen": " Bad."}))),
    Case("prefs-garbled-parquet", ["stage", "run", "label", "-i", "preferences=p.parquet", "-p", "judge=import",
                                   "-o", "out"], 2, [r"stage 'label' input 'preferences' .*p.parquet"],
         setup=write("p.parquet", b"PAR1 this is not parquet")),
    Case("corpus-missing-text", ["stage", "run", "pretrain", "-i", "corpus=c.jsonl", "-o", "out"], 2,
         [r"c.jsonl: .*field 'text': missing"], setup=write("c.jsonl", jsonl({"body": "x"}) * 3)),
    Case("prompts-too-long-for-model", ["stage", "run", "generate", "-i", "model={gpt2}", "-i", "prompts=q.jsonl",
                                        "-p", "max_new_tokens=60", "-o", "out"], 2,
         [r"q.jsonl: .*prompt tokens \+ max_new_tokens 60 exceed the model's 64 positions"],
         setup=write("q.jsonl", jsonl({"prompt": "Review of the lamp:"}))),
]

MODELS = [  # a copy of the tiny GPT-2 directory ({m}) with one file damaged
    Case("model-no-config", ["config.json"], 2, [r"is not a HF model directory \(no config.json\)"]),
    Case("model-garbled-config", ["config.json", "{garbled"], 2,
         [r"m/config.json: not valid JSON \(Expecting property name.*\); restore it from where the model was saved"]),
    Case("model-config-not-object", ["config.json", "[1, 2]"], 2, [r"m/config.json: expected a JSON object"]),
    Case("model-garbled-tokenizer", ["tokenizer.json", "{garbled"], 2, [r"m/tokenizer.json: not valid JSON"]),
    Case("model-no-tokenizer", ["tokenizer.json", None, "tokenizer_config.json"], 2,
         [r"has no tokenizer \(tokenizer.json\); save the tokenizer with the model"]),
    Case("model-truncated-weights", ["model.safetensors", "truncate"], 2,
         [r"m/model.safetensors: truncated \(\d+ bytes, its header describes \d+\); copy it again"]),
    Case("model-garbled-weights-header", ["model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbled"], 2,
         [r"m/model.safetensors: garbled safetensors header \(not JSON\)"]),
    Case("model-no-weights", ["model.safetensors"], 2, [r"m: no weights \(\*.safetensors or pytorch_model.bin\)"]),
    Case("model-is-a-file", [], 2, [r"is not a HF model directory"]),
]

MANUAL = [
    Case("manual-missing-required-input", ["stage", "run", "sft", "-i", "model={gpt2}", "-o", "out"], 2,
         [r"stage type 'sft' needs input 'data' \(dataset: .*\); give it with -i data=PATH"]),
    Case("manual-unknown-input", ["stage", "run", "example.count", "-i", "text=t.txt", "-i", "extra=t.txt", "-o",
                                  "out"], 2, [r"--input extra: stage type 'example.count' takes no input 'extra'"],
         setup=write("t.txt", "x\n")),
    Case("manual-cross-field", ["stage", "run", "label", "-p", "judge=import", "-o", "out"], 2,
         [r"judge 'import' needs an input 'preferences'"]),
    Case("manual-task-not-json", ["stage", "run", "--task", "t.json"], 2,
         [r"--task t.json: not a task description: \(top level\): Invalid JSON"], setup=write("t.json", "{bad")),
    Case("manual-task-missing", ["stage", "run", "--task", "none.json"], 2,
         [r"--task none.json: cannot read it \(No such file or directory\)"]),
    Case("manual-task-wrong-schema", ["stage", "run", "--task", "t.json"], 2,
         [r"--task t.json: not a task description: stage: Input should be a valid string"],
         setup=write("t.json", json.dumps({"stage": 1}))),
    Case("manual-out-under-a-file", ["stage", "run", "example.corpus", "-o", "afile/out"], 2,
         [r"--out .*afile/out: .*afile is a file, so no directory can be made under it"], setup=write("afile", "x")),
    Case("manual-out-is-a-file", ["stage", "run", "example.corpus", "-o", "afile"], 2,
         [r"--out .*afile: is a file; give a directory path"], setup=write("afile", "x")),
    Case("manual-out-over-foreign-files", ["stage", "run", "example.corpus", "-o", "thesis"], 2,
         [r"--out .*thesis: holds files that are not an earlier output of `stage run`; they would be replaced"],
         setup=write("thesis/chapter1.tex", "precious")),
    Case("manual-input-garbled-manifest", ["stage", "run", "example.count", "-i", "text=art", "-o", "out"], 2,
         [r"--input text=art: .*art/manifest.json is not a readable artifact manifest"],
         setup=chain(write("art/corpus.txt", "a b\n"), write("art/manifest.json", "{garbled"))),
]


@pytest.mark.parametrize("case", DATA, ids=ids(DATA))
def test_bad_data(case, tmp_path, tiny_model_dirs):
    run_case(case, tmp_path, tiny_model_dirs)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


def _damaged_model(src: Path, how: list):
    def make(root: Path) -> None:
        if not how:  # the model "directory" is a file
            (root / "m").write_text("not a directory")
            return
        copy_tree(src, "m")(root)
        name, *change = how
        f = root / "m" / name
        if not change:
            f.unlink()
        elif change[0] is None:  # remove this file and the others named after it
            for other in [name, *change[1:]]:
                (root / "m" / other).unlink()
        elif change[0] == "truncate":
            f.write_bytes(f.read_bytes()[:-100])
        else:
            f.write_bytes(change[0] if isinstance(change[0], bytes) else change[0].encode())
    return make


@pytest.mark.parametrize("case", MODELS, ids=ids(MODELS))
def test_bad_model(case, tmp_path, tiny_model_dirs):
    how = case.argv
    run = Case(case.id, ["stage", "run", "generate", "-i", "model=m", "-i", "prompts=q.jsonl", "-p", "n=1", "-o",
                         "out"], case.code, case.patterns,
               setup=chain(_damaged_model(tiny_model_dirs["gpt2"], how),
                           write("q.jsonl", jsonl({"prompt": "Review of the lamp:"}))))
    run_case(run, tmp_path, tiny_model_dirs)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


@pytest.mark.parametrize("case", MANUAL, ids=ids(MANUAL))
def test_bad_manual_stage_run(case, tmp_path, tiny_model_dirs):
    run_case(case, tmp_path, tiny_model_dirs)
