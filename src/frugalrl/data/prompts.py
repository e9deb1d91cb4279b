"""Prompt templates: how a problem becomes the chat messages given to the policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from frugalrl.registry import Registry

Messages = list[dict[str, str]]
Template = Callable[[str], tuple[str | None, str]]  # problem -> (system prompt, user message)

PROMPT_TEMPLATES = Registry[Template]("prompt template")

OPEN_RS_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer, and put your final answer within \\boxed{} . The "
    "reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. Note that respond by English, NOT use other languages."
)


@PROMPT_TEMPLATES.register("plain")
def plain(problem: str) -> tuple[str | None, str]:
    """The problem alone, as the user turn."""
    return None, problem


@PROMPT_TEMPLATES.register("open-rs")
def open_rs(problem: str) -> tuple[str | None, str]:
    """open-rs training prompt: their system prompt (docs/algorithms.md#open-rs), the problem as
    user turn."""
    return OPEN_RS_SYSTEM_PROMPT, problem


@PROMPT_TEMPLATES.register("arora-zanette")
def arora_zanette(problem: str) -> tuple[str | None, str]:
    """Arora & Zanette: the problem followed by their one-line instruction
    (docs/algorithms.md#efficient-reasoning)."""
    return (
        None,
        f"{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    )


# lighteval's MATH query, the prompt open-r1 and open-rs evaluated with. Kept word for word:
# benchmark scores move with the prompt, and comparability is the point of this template.
OPEN_RS_EVAL_PROMPT = (
    "Solve the following math problem efficiently and clearly. The last line of your response "
    "should be of the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. "
    "I hope it is correct' (without quotes) where ANSWER is just the final number or expression "
    "that solves the problem. Think step by step before answering.\n\n{problem}"
)


@PROMPT_TEMPLATES.register("open-rs-eval")
def open_rs_eval(problem: str) -> tuple[str | None, str]:
    """open-rs evaluation (lighteval MATH template): instructions, then the problem, one turn."""
    return None, OPEN_RS_EVAL_PROMPT.format(problem=problem)


@PROMPT_TEMPLATES.register("demo")
def demo(problem: str) -> tuple[str | None, str]:
    """The built-in demo task's prompt."""
    return None, f"Compute {problem}"


def build_messages(problem: str, template: str, system_prompt: str | None = None) -> Messages:
    """Messages for ``problem``: ``template`` is a registered name or a string with ``{problem}``."""
    if "{problem}" in template:
        default_system, user = None, template.replace("{problem}", problem)
    else:
        default_system, user = PROMPT_TEMPLATES.get(template)(problem)
    system = system_prompt if system_prompt is not None else default_system
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def render_prompt(tokenizer, messages: Messages) -> str:
    """The prompt text through the tokenizer's chat template, or plain text if it has none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def encode_prompts(
    problems: Sequence[dict], tokenizer, template: str, system_prompt: str | None = None
) -> list[list[int]]:
    """Token ids of each problem's prompt: ``template`` messages through the chat template."""
    ids = []
    for p in problems:
        text = render_prompt(tokenizer, build_messages(p["problem"], template, system_prompt))
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids
