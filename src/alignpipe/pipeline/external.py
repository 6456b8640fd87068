"""External inputs: a local path, an fsspec URI (s3://, gs://, http://, memory://, ...) or `hf:REPO[@REVISION]`.

Stages read local files, so a remote input is materialized first: fsspec URIs are copied into
`WORKSPACE/external/<sha256(uri)>/` (fetched again only when the remote's fingerprint — fsspec's `ukey`, which
is a checksum, ETag or mtime depending on the backend — changes); `hf:` ids come from the Hugging Face hub cache via
`huggingface_hub.snapshot_download` (needs the network once, or `HF_HUB_OFFLINE=1` with a warm cache). Either way
the input's id is the content hash of the local copy, so caching is by content, not by name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from alignpipe.pipeline.errors import UserError


def materialize(uri: str, workspace: Path) -> Path:
    """A local path holding the input's content (the path itself for local inputs)."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if uri.startswith("hf:"):
        return _from_hub(uri)
    if "://" not in uri:
        path = Path(uri)
        if not path.exists():
            raise UserError(f"external input {uri!r} does not exist (any more)")
        return path
    return _from_fsspec(uri, workspace)


def _from_hub(uri: str) -> Path:
    repo, _, revision = uri[3:].partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"input {uri!r}: hub inputs need huggingface_hub (pip install 'alignpipe[ml]')") from None
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision or None))
    except Exception as e:  # network, auth, unknown repo: all are the user's to fix
        raise UserError(f"input {uri!r}: cannot fetch {repo!r} from the Hugging Face hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}). Download it where the hub is reachable and "
                        "pass the local directory instead") from None


def _from_fsspec(uri: str, workspace: Path) -> Path:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            raise UserError(f"external input {uri!r} does not exist")
        key = _remote_key(fs, path)
    except (ImportError, ValueError, OSError) as e:
        raise UserError(f"external input {uri!r}: {type(e).__name__}: {e}") from None
    dest = workspace / "external" / hashlib.sha256(uri.encode()).hexdigest()[:24]
    stamp = dest.with_suffix(".json")
    if dest.exists() and stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        return dest / "data"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    target = tmp / "data"
    if fs.isdir(path):
        fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    else:
        target.mkdir()
        fs.get(path, str(target / Path(path).name))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    stamp.write_text(json.dumps({"uri": uri, "key": key}))
    return dest / "data"


def _remote_key(fs: object, path: str) -> str:
    """What changes when the remote content does, as cheaply as the backend allows."""
    if fs.isdir(path):
        entries = sorted(fs.find(path, detail=True).items())
        return hashlib.sha256(json.dumps([(p, fs.ukey(p)) for p, _ in entries]).encode()).hexdigest()
    return str(fs.ukey(path))
