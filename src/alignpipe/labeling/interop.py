"""Other labeling tools' formats: export the pairs still to label, import their annotations as judgments, so a team
can keep Label Studio or Argilla and still get the pipeline's durable, per-annotator judgments.

Each exported pair carries its key and the order it is displayed in (randomized per pair, like the page), and the
import maps the tool's "left"/"A" back through that order, so position is recorded the same way for every source.

Label Studio (JSON import and its JSON export):
    tasks:  [{"data": {"prompt", "left", "right", "pair", "shown"}}], with LABEL_STUDIO_CONFIG as the project's
            labeling interface (Choices "preference": A / B / Tie; a skipped task is a skip);
    import: each task's "annotations": completed_by -> annotator "label-studio:<id or email>", a Choices result
            (A/B/Tie, left/right) or a Pairwise result (value.selected left/right), was_cancelled -> skip,
            lead_time -> dwell seconds.
Argilla (2.x records, as `dataset.records.to_json()` writes and `Record.from_dict` reads):
    records: [{"id", "fields": {"prompt", "response_a", "response_b"}, "metadata": {"pair", "shown"}}], for a
            dataset with those three TextFields and a LabelQuestion "preference" with labels A, B, tie;
    import: "responses": {"preference": [{"value": "A" | "B" | "tie", "user_id"}]} -> annotator "argilla:<user_id>".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignpipe.labeling.db import choice_from_position, display_order
from alignpipe.labeling.params import prompt_text

LABEL_STUDIO_CONFIG = """<View>
  <Header value="Which response is better?"/>
  <Text name="prompt" value="$prompt"/>
  <View style="display: grid; grid-template-columns: 1fr 1fr; column-gap: 1em">
    <View><Header value="A"/><Text name="left" value="$left"/></View>
    <View><Header value="B"/><Text name="right" value="$right"/></View>
  </View>
  <Choices name="preference" toName="prompt" choice="single" showInline="true" required="true">
    <Choice value="A" hotkey="1"/>
    <Choice value="B" hotkey="2"/>
    <Choice value="Tie" hotkey="3"/>
  </Choices>
</View>
"""
ARGILLA_QUESTION = "preference"
POSITION = {"a": "left", "left": "left", "b": "right", "right": "right", "tie": "tie", "skip": "skip"}


def _shown(pair: dict[str, Any], seed: int, tool: str) -> tuple[str, str, str]:
    shown = display_order(seed, pair["key"], f"export:{tool}")
    left, right = (pair["a"], pair["b"]) if shown == "ab" else (pair["b"], pair["a"])
    return shown, left, right


def to_label_studio(pairs: Iterable[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    tasks = []
    for p in pairs:
        shown, left, right = _shown(p, seed, "label-studio")
        tasks.append({"data": {"prompt": prompt_text(p["prompt"]), "left": left, "right": right, "pair": p["key"],
                               "shown": shown}})
    return tasks


def to_argilla(pairs: Iterable[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    records = []
    for p in pairs:
        shown, left, right = _shown(p, seed, "argilla")
        records.append({"id": p["key"], "fields": {"prompt": prompt_text(p["prompt"]), "response_a": left,
                                                   "response_b": right},
                        "metadata": {"pair": p["key"], "shown": shown}})
    return records


def _choice(label: Any, shown: str, where: str) -> str:
    position = POSITION.get(str(label).strip().lower())
    if position is None:
        raise ValueError(f"{where}: answer {label!r} is not A, B, tie, left or right")
    return choice_from_position(position, shown)


def _pair_and_shown(meta: dict[str, Any], where: str) -> tuple[str, str]:
    pair, shown = meta.get("pair"), meta.get("shown")
    if not isinstance(pair, str) or shown not in ("ab", "ba"):
        raise ValueError(f"{where}: needs the 'pair' and 'shown' ('ab' or 'ba') alignpipe exported with it; "
                         "import only what `alignpipe label export` produced")
    return pair, shown


def _label_studio_answer(annotation: dict[str, Any], where: str) -> Any:
    if annotation.get("was_cancelled"):
        return "skip"
    for r in annotation.get("result", []):
        value = r.get("value", {})
        if r.get("type") == "pairwise" and "selected" in value:
            return value["selected"]
        if r.get("type") == "choices" and value.get("choices"):
            return value["choices"][0]
    raise ValueError(f"{where}: no Choices or Pairwise result")


def from_label_studio(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judgments from a Label Studio JSON export (a list of tasks with their annotations)."""
    out = []
    for i, task in enumerate(tasks):
        pair, shown = _pair_and_shown(task.get("data", {}), f"task {i} data")
        for k, ann in enumerate(task.get("annotations", [])):
            where = f"task {i} annotation {k}"
            who = ann.get("completed_by")
            who = who.get("email", who.get("id")) if isinstance(who, dict) else who
            if who is None:
                raise ValueError(f"{where}: no completed_by (who annotated it)")
            out.append({"pair": pair, "annotator": f"label-studio:{who}", "shown": shown,
                        "choice": _choice(_label_studio_answer(ann, where), shown, where),
                        "dwell": ann.get("lead_time")})
    return out


def from_argilla(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judgments from Argilla records (their `responses` to the "preference" question)."""
    out = []
    for i, rec in enumerate(records):
        pair, shown = _pair_and_shown(rec.get("metadata", {}), f"record {i} metadata")
        for k, resp in enumerate(rec.get("responses", {}).get(ARGILLA_QUESTION, [])):
            where = f"record {i} response {k}"
            if not resp.get("user_id"):
                raise ValueError(f"{where}: no user_id (who answered)")
            out.append({"pair": pair, "annotator": f"argilla:{resp['user_id']}", "shown": shown,
                        "choice": _choice(resp.get("value"), shown, where)})
    return out


def from_judgments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """alignpipe's own judgments.jsonl (a preference artifact's, or `label export --format judgments`)."""
    keep = ("pair", "annotator", "choice", "shown", "reason", "created", "dwell")
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in keep[:4] if k not in r]
        if missing:
            raise ValueError(f"record {i}: missing {', '.join(missing)}")
        out.append({k: r[k] for k in keep if k in r})
    return out


READERS = {"label-studio": from_label_studio, "argilla": from_argilla, "judgments": from_judgments}
WRITERS = {"label-studio": to_label_studio, "argilla": to_argilla}


def read_file(path: Path) -> list[dict[str, Any]]:
    """A JSON list or JSON lines."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
    else:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(d, dict) for d in data):
        raise ValueError("expected a JSON list of objects (or one object per line)")
    return data
