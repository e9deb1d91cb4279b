"""Problem datasets and the prompts built from them."""

from frugalrl.data.dataset import load_problems
from frugalrl.data.prompts import PROMPT_TEMPLATES, build_messages, encode_prompts, render_prompt

__all__ = [
    "PROMPT_TEMPLATES",
    "build_messages",
    "encode_prompts",
    "load_problems",
    "render_prompt",
]
