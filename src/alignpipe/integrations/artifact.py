"""A model artifact as the integrations see it: what it is (role), how HF loads it (task), where it came from.

Torch-free: everything comes from the manifest, config.json and the store's lineage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.store import Artifact, Store

REWARD_NORM_KEY = "alignpipe_reward_normalization"  # = alignpipe.models.build.REWARD_NORM_KEY (that module is torch)


@dataclass(frozen=True)
class Role:
    symbol: str  # πSFT, Rφ, πRLHF, ...
    what: str  # one sentence for the model card


ROLES = {
    ("pretrain", "model"): Role("base LM", "A causal language model pretrained from scratch on the task's corpus, "
                                           "with its BPE tokenizer: the starting point of supervised fine-tuning."),
    ("sft", "model"): Role("πSFT", "The supervised fine-tuned policy πSFT: the base LM trained on demonstrations "
                                   "(completion-only loss). It is RLHF's initial policy and the frozen KL reference."),
    ("reward", "model"): Role("Rφ", "The reward model Rφ: πSFT's backbone with a scalar head, trained with a "
                                    "Bradley-Terry loss on preference pairs sampled from πSFT and labeled."),
    ("ppo", "policy"): Role("πRLHF", "The RLHF policy πRLHF: πSFT optimized with PPO to maximize Rφ's score, with "
                                     "a per-token KL penalty β·KL(π‖πSFT) to the frozen πSFT."),
    ("ppo", "value"): Role("value model", "The PPO critic V: a scalar head on a transformer backbone, trained to "
                                          "predict the return of πRLHF's responses."),
}
TASKS = {"ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
         "LMHeadModel": ("text-generation", "AutoModelForCausalLM"),  # GPT-2's name for its causal LM
         "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification")}


@dataclass(frozen=True)
class ModelArtifact:
    """A published model: the store artifact plus what the integrations derive from it."""

    artifact: Artifact
    config: dict[str, Any]
    role: Role
    task: str  # the HF pipeline task: text-generation or text-classification
    auto_class: str  # the transformers Auto class that loads it
    lineage: dict[str, str]  # "stage.output" -> artifact id, every store artifact upstream (itself included)
    external: dict[str, str]  # artifact id -> URI of the external inputs upstream
    datasets: dict[str, dict[str, Any]]  # "stage.output" -> {"id", "facts"} of the datasets upstream

    @property
    def id(self) -> str:
        return self.artifact.id

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    @property
    def producer(self) -> dict[str, Any]:
        return self.artifact.producer

    @property
    def ref(self) -> str:
        """'stage.output' that produced it."""
        return f"{self.producer.get('stage')}.{self.producer.get('output')}"

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    def reward_normalization(self) -> dict[str, Any] | None:
        """For an RM: the normalization its stage computed (summary) and whether the head's raw output already is
        the normalized score (config.json records none, or the identity)."""
        norm = self.summary.get("normalization")
        if not norm:
            return None
        recorded = self.config.get(REWARD_NORM_KEY) or {}
        folded = float(recorded.get("bias", 0.0)) == 0.0 and float(recorded.get("gain", 1.0)) == 1.0
        return {**norm, "folded": folded}

    def files(self) -> list[str]:
        """The payload files (manifest.json excluded), as the manifest lists them."""
        return [f["path"] for f in self.manifest["files"]]


def open_model(workspace: str | os.PathLike, ref: str) -> ModelArtifact:
    """The model artifact REF (id, prefix, tag or stage[.output]) of a workspace; UserError for anything else."""
    from alignpipe.api import Workspace

    ws = Workspace(workspace)
    try:
        art = ws.show(ref)  # with its files at hand (fetched into the cache for a workspace in a bucket)
    finally:
        ws.close()
    return model_artifact(ws.store, art, ref)


def model_artifact(store: Store, art: Artifact, ref: str | None = None) -> ModelArtifact:
    name = ref or art.id[:12]
    if art.kind != "model":
        raise UserError(f"{name} is a {art.kind} artifact ({art.producer.get('stage')}.{art.producer.get('output')}, "
                        f"{art.id[:12]}), not a model; give a model artifact such as sft.model, reward.model or "
                        "ppo.policy")
    try:
        config = json.loads((art.path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{name}: model artifact {art.id[:12]} has no readable config.json; it is not a Hugging Face "
                        "model directory") from None
    arch = (config.get("architectures") or [""])[0]
    task = next((t for suffix, t in TASKS.items() if arch.endswith(suffix)), None)
    if task is None:
        raise UserError(f"{name}: architecture {arch or 'unknown'!r} in config.json is neither a causal LM nor a "
                        "sequence classifier; only those can be published")
    key = (art.producer.get("uses"), art.producer.get("output"))
    role = ROLES.get(key, Role("model", f"A model produced by stage {art.producer.get('stage')!r} "
                                        f"({art.producer.get('uses')})."))
    lineage, external = _flatten(store.lineage(art.id))
    datasets = {}
    for upstream, art_id in sorted(lineage.items()):
        up = store.get(art_id)
        if up.kind == "dataset":
            facts = {k: v for k, v in up.manifest.get("summary", {}).items()
                     if isinstance(v, (int, float, str)) and k != "headline"}
            datasets[upstream] = {"id": art_id, "facts": facts}
    return ModelArtifact(art, config, role, task[0], task[1], lineage, external, datasets)


def lineage_ids(store: Store, art_id: str) -> dict[str, str]:
    """'stage.output' -> artifact id of everything upstream of art_id in the store (itself included)."""
    return _flatten(store.lineage(art_id))[0]


def _flatten(node: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """('stage.output' -> id, id -> external URI) over a store.lineage tree (artifacts gc'd since are left out)."""
    refs: dict[str, str] = {}
    external: dict[str, str] = {}
    todo = [node]
    while todo:
        n = todo.pop()
        if n.get("external"):
            external[n["id"]] = n["external"]
            continue
        if n.get("stage") and not n.get("missing"):
            refs.setdefault(f"{n['stage']}.{n['output']}", n["id"])
        todo.extend(n.get("inputs", {}).values())
    return refs, external
