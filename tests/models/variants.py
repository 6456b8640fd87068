"""The model variants the lean GPT-2/Llama paths are tested on (models.kv, models.lean), as causal LMs or reward
models: plain GPT-2 and Llama, Llama with grouped-query heads, and GPT-2 with LoRA adapters that change the
function."""

import torch

from alignpipe.models.build import apply_lora, load_causal_lm, reward_model_from_causal

NAMES = ["gpt2", "llama", "llama-gqa", "gpt2-lora"]


def variant(name: str, dirs: dict, reward: bool = False) -> torch.nn.Module:
    """`name` built from the tiny model directories: a causal LM, or with reward=True a reward model (fresh head)."""
    load = reward_model_from_causal if reward else load_causal_lm
    if name == "llama-gqa":
        from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

        config = LlamaConfig(**{**load(dirs["llama"]).config.to_dict(), "num_attention_heads": 4,
                                "num_key_value_heads": 2})
        torch.manual_seed(0)
        return (LlamaForSequenceClassification if reward else LlamaForCausalLM)(config)
    if name == "gpt2-lora":
        model = apply_lora(load(dirs["gpt2"]), r=2, alpha=4)
        with torch.no_grad():  # LoRA's B starts at 0: make the adapters change the function
            for param_name, p in model.named_parameters():
                if "lora_B" in param_name:
                    p.normal_(0, 0.5)
        return model
    return load(dirs[name])
