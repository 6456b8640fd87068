"""Built-in stage types: name -> 'module[:attribute]' holding a StageDef (default attribute STAGE).

Stage modules import torch inside run(), never at module level: the engine imports them to validate params.
"""

BUILTINS: dict[str, str] = {
    "example.corpus": "alignpipe.stages.example:CORPUS",
    "example.count": "alignpipe.stages.example:COUNT",
    "example.report": "alignpipe.stages.example:REPORT",
    "label": "alignpipe.stages.label",
    "pretrain": "alignpipe.stages.pretrain",
    "sft": "alignpipe.stages.sft",
    "generate": "alignpipe.stages.generate",
    "reward": "alignpipe.stages.reward",
    "task.reviews": "alignpipe.stages.reviews",
    "ppo": "alignpipe.stages.ppo",
    "evaluate": "alignpipe.stages.evaluate",
    "bon": "alignpipe.stages.bon",
}
