"""HF model plumbing: tokenizers, building/loading/saving tiny LMs and reward models, LoRA, masked forwards.

Submodules import torch and transformers; import them inside stage `run()` functions only.
- `alignpipe.models.tokenizer`: train_tokenizer, ensure_pad_token
- `alignpipe.models.build`: LMSpec, build_causal_lm, disable_dropout, load_*, reward_model_from_causal,
  apply_lora, save_model
- `alignpipe.models.forward`: collation, position ids, response_logprobs, score_sequences, value_sequences,
  sample_responses, check_tokenizers_compatible
- `alignpipe.models.kv`: the sampler's incremental decoding steps (lean GPT-2/Llama, transformers otherwise)
- `alignpipe.models.lean`: GPT-2/Llama on their own submodules: the decoding steps' layers, the forwards of
  response_logprobs / value_sequences / score_sequences with the last layer cut to the columns read
  (final_hidden), and the reward training forward with one row per preference pair (pair_scores)
- `alignpipe.models.scoring`: RewardScorer (normalized scores of texts), preference_scores (training forward)
"""

from typing import Any


def max_positions(config: Any) -> int | None:
    """The longest sequence a model config supports (None if it does not say). Torch-free: stages use it too."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
