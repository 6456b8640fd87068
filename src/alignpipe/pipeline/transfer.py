"""Copy artifacts with their whole lineage between workspaces (a laptop's directory <-> a team's bucket).

`alignpipe push REF --to URI` and `alignpipe pull REF --from URI` both end here. What moves is the artifact and
every artifact upstream of it (its lineage closure), each with its manifest unchanged (so its id, producer and
lineage are the same on both sides) and re-hashed before it is published on the other side. Artifacts the other
side has are skipped, so a transfer is idempotent and a retried one resumes. The cache refs of the stages that
produced them go along when every output of the stage is on the other side, so a pipeline run there finds them
cached. `dry_run` only lists what would move.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.store import MANIFEST, Store, hash_tree


@dataclass
class Transfer:
    moved: list[str] = field(default_factory=list)  # artifact ids copied (or, on a dry run, to be copied)
    present: list[str] = field(default_factory=list)  # already on the other side
    refs: list[str] = field(default_factory=list)  # cache refs recorded on the other side
    bytes: int = 0


def transfer(src: Store, dst: Store, art_id: str, dry_run: bool = False,
             progress: Callable[[str, int], None] | None = None) -> Transfer:
    """Copy `art_id` and its lineage closure from `src` to `dst`; `progress(id, bytes)` after each artifact."""
    if str(src.root) == str(dst.root):
        raise UserError(f"{src.root}: source and destination are the same workspace")
    closure = sorted(src.closure({art_id}), key=lambda i: src.get(i).manifest.get("created", 0))
    result = Transfer()
    for i in closure:
        if dst.has(i):
            result.present.append(i)
            continue
        manifest = src.get(i).manifest
        result.moved.append(i)
        result.bytes += sum(e["size"] for e in manifest["files"])
        if not dry_run:
            import_artifact(dst, src.local_dir(i), manifest)
            if progress is not None:
                progress(i, sum(e["size"] for e in manifest["files"]))
    if not dry_run:
        result.refs = _copy_refs(src, dst, closure)
    return result


def import_artifact(dst: Store, directory: Path, manifest: dict) -> None:
    """Publish an existing artifact (its files in `directory`, its manifest kept as is) into `dst`, after checking
    that the files still hash to its id."""
    art_id = manifest["id"]
    with tempfile.TemporaryDirectory(dir=dst.state if dst.state.exists() else None) as tmp:
        staging = Path(tmp) / art_id
        shutil.copytree(directory, staging, ignore=shutil.ignore_patterns(MANIFEST))
        got = hash_tree(staging)[0]
        if got != art_id:
            raise UserError(f"artifact {art_id[:12]}: its files at {directory} hash to {got[:12]}; it is damaged "
                            "there: run `alignpipe verify` on the source workspace")
        dst.put_sealed(staging, manifest)


def _copy_refs(src: Store, dst: Store, ids: list[str]) -> list[str]:
    recorded = []
    for fp in sorted({src.get(i).producer.get("fingerprint") for i in ids} - {None}):
        outputs = src.lookup(fp)
        if outputs and all(dst.has(i) for i in outputs.values()) and dst.lookup(fp) != outputs:
            dst.record(fp, outputs, src.get(next(iter(outputs.values()))).producer.get("stage", ""))
            recorded.append(fp)
    return recorded
