"""Bad command lines: usage errors exit 2 with the usage line; bad values name the option and the fix."""

import pytest
from badinput import Case, copy_tree, ids, run_case

EXAMPLE = "ws"  # the example workspace, copied into the case directory by `with_ws`

CASES = [
    Case("no-such-command", ["nosuchcommand"], 2, [r"Usage: .*alignpipe", r"No such command 'nosuchcommand'"]),
    Case("run-unknown-option", ["run", "--bogus"], 2, [r"Usage: .*run", r"No such option: --bogus"]),
    Case("validate-no-file", ["validate"], 2, [r"Usage: .*validate", r"Missing argument 'pipeline'"]),
    Case("validate-missing-file", ["validate", "nope.yaml"], 2,
         [r"nope.yaml: no such pipeline file\. Pass a YAML file"]),
    Case("stage-seed-not-int", ["stage", "run", "example.corpus", "-o", "out", "--seed", "abc"], 2,
         [r"Invalid value for '--seed'.*valid integer"]),
    Case("stage-seed-negative", ["stage", "run", "example.corpus", "-o", "out", "--seed", "-1"], 2,
         [r"Invalid value for '--seed'.*greater than or equal to 0"]),
    Case("stage-seed-too-big", ["stage", "run", "example.corpus", "-o", "out", "--seed", str(2**63)], 2,
         [r"Invalid value for '--seed'.*less than or equal to 9223372036854775807"]),
    Case("stage-no-type", ["stage", "run", "-o", "out"], 2,
         [r"stage run: give TYPE and --out DIR \(or --task FILE\)"]),
    Case("stage-no-out", ["stage", "run", "example.corpus"], 2, [r"give TYPE and --out DIR"]),
    Case("stage-param-no-equals", ["stage", "run", "example.corpus", "-p", "lines", "-o", "out"], 2,
         [r"--param 'lines': expected NAME=VALUE"]),
    Case("stage-input-no-equals", ["stage", "run", "example.count", "-i", "text", "-o", "out"], 2,
         [r"--input 'text': expected NAME=VALUE"]),
    Case("stage-unknown-type", ["stage", "run", "example.nope", "-o", "out"], 2,
         [r"stage 'example.nope': unknown stage type 'example.nope'; expected one of: .*example.corpus"]),
    Case("stage-unknown-param", ["stage", "run", "example.corpus", "-p", "linez=3", "-o", "out"], 2,
         [r"stage 'example.corpus': params.linez: unknown field; remove it or check its spelling"]),
    Case("message-with-markup-characters", ["stage", "run", "example.corpus", "-p", "lines=x[/red]y", "-o", "out"],
         2, [r"params.lines: Input should be a valid integer.*\(got 'x\[/red\]y'\)"]),
    Case("stage-bool-param", ["stage", "run", "example.corpus", "-p", "lines=true", "-o", "out"], 2,
         [r"params.lines: expected a number, got the boolean true"]),
    Case("run-unknown-executor", ["run", "--example", "--executor", "slurm", "-w", "ws"], 2,
         [r"--executor 'slurm': expected 'local' or 'ray'"]),
    Case("run-unknown-verify", ["run", "--example", "--verify", "sometimes", "-w", "ws"], 2,
         [r"--verify 'sometimes': expected one of always, inputs, never"]),
    Case("run-from-unknown-stage", ["run", "--example", "--from", "nosuch", "-w", "ws"], 2,
         [r"example.yaml: no stage named 'nosuch'; stages: corpus, words, chars, report"]),
    Case("run-only-uncached", ["run", "--example", "--only", "report", "-w", "ws"], 2,
         [r"stage 'corpus' has no cached output .* run without --only first"], writes=(r"^ws/",)),
    Case("status-no-workspace", ["status", "-w", "nows"], 2,
         [r"nows: no alignpipe workspace here \(no \.alignpipe/journal\.db\); run a pipeline first"]),
    Case("runs-no-workspace", ["runs", "-w", "nows"], 2, [r"no alignpipe workspace here"]),
    Case("metrics-no-workspace", ["metrics", "words", "-w", "nows"], 2, [r"no alignpipe workspace here"]),
]

WITH_WS = [
    Case("show-unknown-ref", ["show", "nosuchref", "-w", "ws"], 2,
         [r"'nosuchref' is no artifact id, id prefix or tag in this workspace"]),
    Case("lineage-unknown-ref", ["lineage", "zzzz", "-w", "ws"], 2, [r"'zzzz' is no artifact id, id prefix or tag"]),
    Case("show-several-outputs", ["show", "words.nope", "-w", "ws"], 2,
         [r"stage 'words' has no output 'nope'; it has: out"]),
    Case("tag-bad-name", ["tag", "a/b", "corpus", "-w", "ws"], 2, [r"tag name 'a/b' is invalid"]),
    Case("tag-unknown-ref", ["tag", "best", "nosuchref", "-w", "ws"], 2, [r"'nosuchref' is no artifact id"]),
    Case("logs-unknown-stage", ["logs", "nosuch", "-w", "ws"], 2,
         [r"stage 'nosuch' has no executed attempt in .*ws; see `alignpipe status`"]),
    Case("metrics-unknown-metric", ["metrics", "words", "-m", "loss", "-w", "ws"], 2,
         [r"stage 'words' logged no metric \['loss'\]"]),
    Case("status-unknown-run", ["status", "nosuchrun", "-w", "ws"], 2,
         [r"no run matches 'nosuchrun'; see `alignpipe runs`"]),
    Case("verify-unknown-ref", ["verify", "nosuchref", "-w", "ws"], 2, [r"'nosuchref' is no artifact id"]),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_command_line(case, tmp_path):
    run_case(case, tmp_path, {})


@pytest.mark.parametrize("case", WITH_WS, ids=ids(WITH_WS))
def test_bad_query_of_a_workspace(case, tmp_path, example_ws):
    case.setup = copy_tree(example_ws, EXAMPLE)
    run_case(case, tmp_path, {})


def test_version_and_help_are_not_errors(tmp_path):
    ok = Case("version", ["--version"], 0, [r"alignpipe \d+\.\d+\.\d+"])
    run_case(ok, tmp_path / "v", {})
    run_case(Case("help", ["run", "--help"], 0, [r"Usage: .*run"]), tmp_path / "h", {})


