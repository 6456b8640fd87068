"""The embedded default task: templated product reviews, a VADER gold scorer and a simulated human.

Everything is generated from a seed, offline; nothing here imports torch.
"""

from alignpipe.task.gold import DEFAULT_LABEL_TEMPERATURE, Label, SimulatedHuman, gold_score
from alignpipe.task.reviews import SPLITS, make_corpus, make_demonstrations, make_prompts, prompt_pool

__all__ = [
    "DEFAULT_LABEL_TEMPERATURE",
    "SPLITS",
    "Label",
    "SimulatedHuman",
    "gold_score",
    "make_corpus",
    "make_demonstrations",
    "make_prompts",
    "prompt_pool",
]
