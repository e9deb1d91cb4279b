"""The demo's tiny policy: a real Qwen2 architecture and a real byte-level BPE tokenizer.

Both are built locally (nothing is downloaded) and saved in Hugging Face format, so the rest of
frugalrl loads them with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer`` exactly as
it loads DeepSeek-R1-Distill-Qwen-1.5B.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import (
    PRETOKENIZE_REGEX as QWEN2_PRETOKENIZE_REGEX,
)

PAD, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, IM_START, EOS]
# Like DeepSeek-R1's, the think tags are single tokens but not special: decoding keeps them.
THINK_TOKENS = ["<think>", "</think>"]

# Qwen's ChatML layout; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``corpus`` with Qwen2's normalizer and pre-tokenizer.

    Using Qwen2's exact pre-tokenization (digits one per token, its split regex) matters:
    ``AutoTokenizer`` loads a ``qwen2`` checkpoint as ``Qwen2Tokenizer``, which rebuilds that
    pre-tokenizer around our vocabulary, so only a Qwen2-shaped tokenizer round-trips.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def build_trace_tokenizer(rows: Iterable[dict]) -> PreTrainedTokenizerFast:
    """``build_tokenizer`` on the chat frame and the problems and traces of demo-task ``rows``
    (``make_split(..., with_traces=True)``): the tokenizer of the tests' and benchmarks' models."""
    rows = list(rows)
    corpus = ["<|im_start|>user\nCompute <|im_end|>\n<|im_start|>assistant\n"]
    corpus += [r["problem"] for r in rows] + [r["completion"] for r in rows]
    return build_tokenizer(corpus)


def build_model(
    vocab_size: int, seed: int = 0, tie_word_embeddings: bool = True, **overrides: int
) -> Qwen2ForCausalLM:
    """A Qwen2 decoder small enough to train on a laptop CPU in minutes (~0.35M parameters).

    Heads are 32 wide (96 = 3 × 32, one key/value head, grouped-query attention as in Qwen2):
    vLLM's CPU attention takes head sizes 32, 64, 80, 96, ..., so vLLM can serve the demo."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=overrides.get("hidden_size", 96),
        intermediate_size=overrides.get("intermediate_size", 288),
        num_hidden_layers=overrides.get("num_hidden_layers", 3),
        num_attention_heads=overrides.get("num_attention_heads", 3),
        num_key_value_heads=overrides.get("num_key_value_heads", 1),
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        use_sliding_window=False,
    )
    return Qwen2ForCausalLM(config)


def save_pretrained(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
