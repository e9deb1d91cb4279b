"""Per-token log-probabilities of completions under a causal LM."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from frugalrl.precision import compute_dtype


def pack_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> dict[str, Tensor]:
    """Lay out (prompt, completion) pairs as [left pad | prompt | completion | right pad].

    Prompts end at the same column, so completion token j of every row sits at column
    ``prompt_width + j``; ``completion_mask`` marks the real completion tokens.
    """
    pw = max(len(p) for p in prompts)
    cw = max(len(c) for c in completions)
    rows, attn, cmask = [], [], []
    for p, c in zip(prompts, completions, strict=True):
        left, right = pw - len(p), cw - len(c)
        rows.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        attn.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        cmask.append([1] * len(c) + [0] * right)
    attention_mask = torch.tensor(attn)
    # Positions count real tokens only, as in generate(), so left padding changes nothing.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": torch.tensor(rows),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "completion_mask": torch.tensor(cmask, dtype=torch.bool),
    }


def completion_logprobs(
    model,
    batch: dict[str, Tensor],
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    chunk_tokens: int | None = None,
    head_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None]:
    """log π(y_t | x, y_<t) for every completion token, from logits / temperature.

    Dividing by the sampling temperature makes these the log-probs of the distribution the
    completions were actually drawn from, so the PPO ratio compares like with like.
    Returns (B, T_completion) log-probs and, if asked, the per-token entropy of the same
    tempered distribution: detached by default (a logged statistic: keeping its graph would hold
    another (B, T, vocab) tensor for backward), with ``entropy_grad`` part of the graph, for an
    entropy bonus that actually moves the policy.

    With ``chunk_tokens`` (and a model whose logits are ``lm_head(last hidden state)``, see
    ``supports_chunked_logprobs``) only the completion tokens' hidden states go through the output
    layer, ``chunk_tokens`` of them at a time, each chunk recomputed in backward
    (``chunked_token_logprobs``): no (B, T, vocab) tensor ever exists, and padding costs nothing
    in the output layer. Padded positions then hold 0.

    ``batch`` is ``pack_batch``'s padded layout or ``algo.packing.pack_rows``'s packed one
    (``predict_index``): the same log-probs either way, up to float rounding.

    Log-softmax and the returned log-probs are fp32 whatever the model computes in (under a
    bf16 autocast region, frugalrl.precision, the matrix products are bf16). ``head_dtype``
    (e.g. fp32 inside a bf16 region, ``train.lm_head_fp32``) computes the output layer's
    logits in that dtype instead; it takes the chunked path, in one chunk when
    ``chunk_tokens`` is None.
    """
    mask = batch["completion_mask"]
    if head_dtype is not None and chunk_tokens is None:
        chunk_tokens = max(1, int(mask.sum()))
    with_entropy = with_entropy or entropy_grad
    if chunk_tokens is not None:
        hidden, targets = _completion_hidden_states(model, batch)
        logp_flat, entropy_flat = chunked_token_logprobs(
            hidden,
            targets,
            model.get_output_embeddings(),
            temperature,
            chunk_tokens,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
            head_dtype=head_dtype,
        )
    elif "predict_index" in batch:  # packed rows (algo.packing): the predicting positions only
        logits, targets = _packed_logits(model, batch)
        logp_flat, entropy_flat = _head_chunk(
            logits, targets, torch.nn.Identity(), temperature, with_entropy, entropy_grad
        )
    else:
        return _padded_logprobs(model, batch, temperature, with_entropy, entropy_grad)
    logp = logp_flat.new_zeros(mask.shape).masked_scatter(mask, logp_flat)
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(logp).masked_scatter(mask, entropy_flat)
    return logp, entropy


def _completion_hidden_states(model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(N, d) last hidden states that predict the N completion tokens, and those tokens (N,),
    in ``completion_mask``'s row-major order, from the padded or the packed layout."""
    ids = batch["input_ids"]
    hidden = model.get_decoder()(
        input_ids=ids,
        attention_mask=batch.get("attention_mask"),
        position_ids=batch["position_ids"],
        use_cache=False,
    ).last_hidden_state
    if "predict_index" in batch:
        index = batch["predict_index"]
        return hidden.flatten(0, 1)[index], ids.flatten()[index + 1]
    mask = batch["completion_mask"]
    width = mask.shape[1]
    return hidden[:, -width - 1 : -1][mask], ids[:, -width:][mask]


def _packed_logits(model, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(N, vocab) logits predicting the N completion tokens of a packed layout, and the tokens:
    the model computes logits only at the columns some row predicts from."""
    ids, index = batch["input_ids"], batch["predict_index"]
    width = ids.shape[1]
    columns = torch.unique(index % width) if index.numel() else index.new_zeros(1)  # sorted
    logits = model(
        input_ids=ids,
        position_ids=batch["position_ids"],
        logits_to_keep=columns,
        use_cache=False,
    ).logits
    kept = torch.searchsorted(columns, index % width)
    return logits[index // width, kept], ids.flatten()[index + 1]


def _padded_logprobs(
    model, batch: dict[str, Tensor], temperature: float, with_entropy: bool, entropy_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """The plain path on the padded layout: logits at the last ``width + 1`` positions."""
    width = batch["completion_mask"].shape[1]
    ids = batch["input_ids"]
    targets = ids[:, -width:]
    logits = model(
        input_ids=ids,
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=width + 1,
        use_cache=False,
    ).logits[:, :-1]
    logits = logits.float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """sum_v a[n, v] b[n, v] without an (N, V) temporary."""
    return (a.unsqueeze(1) @ b.unsqueeze(-1)).view(-1)


def _shifted_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float):
    """z' = z - max_v z with z = (h W^T + b) / T in float32, in one (N, V) buffer."""
    z = torch.nn.functional.linear(hidden, weight, bias).float().div_(temperature)
    return z.sub_(z.amax(dim=-1, keepdim=True))


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """log p(target) and entropy of softmax((h W^T + b) / T), chunk by chunk over positions,
    the products h W^T in ``dtype`` (bf16 under mixed precision, the gradients accumulated in
    the weights' dtype), the softmax in fp32,
    with a hand-written backward that recomputes each chunk's logits, works on them in place
    and accumulates the weight gradient into one buffer: at most two (chunk, vocab) buffers and
    one weight-sized gradient exist at once (activation checkpointing through autograd would
    also keep the softmax's intermediates and a second weight-sized gradient per chunk).

    With z' the max-shifted logits and S = sum_v exp(z'_v): log p(t) = z'_t - log S and
    H = log S - sum_v exp(z'_v) z'_v / S.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_tokens, with_entropy, dtype):
        with torch.autocast(hidden.device.type, enabled=False):  # the casts are explicit
            return _ChunkedLinearLogprobs._forward(
                ctx, hidden, weight, bias, targets, temperature, chunk_tokens, with_entropy, dtype
            )

    @staticmethod
    def _forward(
        ctx, hidden, weight, bias, targets, temperature, chunk_tokens, with_entropy, dtype
    ):
        n = hidden.shape[0]
        w, b = _cast(weight, dtype), _cast(bias, dtype)
        logp = torch.empty(n, device=hidden.device, dtype=torch.float32)
        entropy = torch.empty(n if with_entropy else 0, device=hidden.device, dtype=torch.float32)
        for start in range(0, n, chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            z = _shifted_logits(hidden[rows].to(dtype), w, b, temperature)
            target = z.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
            if with_entropy:
                e = z.exp()
                total = e.sum(-1)
                entropy[rows] = total.log() - _rowdot(e, z) / total
                del e
            else:
                total = z.exp_().sum(-1)
            logp[rows] = target - total.log()
            del z
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk_tokens, ctx.dtype = temperature, chunk_tokens, dtype
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        with torch.autocast(grad_logp.device.type, enabled=False):
            return _ChunkedLinearLogprobs._backward(ctx, grad_logp, grad_entropy)

    @staticmethod
    def _backward(ctx, grad_logp, grad_entropy):
        # d logp / dz = onehot(target) - p;  d H / dz = -p (z - E_p[z]);  z = (h W^T + b) / T.
        hidden, weight, bias, targets = ctx.saved_tensors
        temperature, dtype = ctx.temperature, ctx.dtype
        w, b = _cast(weight, dtype), _cast(bias, dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        with_entropy = grad_entropy is not None and grad_entropy.numel() > 0
        for start in range(0, hidden.shape[0], ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            h = hidden[rows].to(dtype)
            z = _shifted_logits(h, w, b, temperature)
            g = grad_logp[rows].unsqueeze(-1)
            if with_entropy:
                p = z.exp()
                p.div_(p.sum(-1, keepdim=True))
                z.sub_(_rowdot(p, z).unsqueeze(-1)).mul_(p).mul_(-grad_entropy[rows].unsqueeze(-1))
                dz = p.mul_(-g).add_(z)
                del z
            else:
                dz = z.exp_()
                dz.div_(dz.sum(-1, keepdim=True)).mul_(-g)
            dz.scatter_add_(-1, targets[rows].unsqueeze(-1), g).div_(temperature)
            dz = dz.to(dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = dz @ w
            if grad_weight is not None and dtype == weight.dtype:
                grad_weight.addmm_(dz.t(), h)
            elif grad_weight is not None:  # a bf16 product, summed over chunks in fp32
                grad_weight.add_(dz.t() @ h)
            if grad_bias is not None:
                grad_bias += dz.sum(0)
            del dz
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _cast(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.to(dtype)


class _HeadIn(torch.nn.Module):
    """``head`` applied outside autocast, its input cast to ``dtype``."""

    def __init__(self, head: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.head, self.dtype = head, dtype

    def forward(self, hidden: Tensor) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.dtype))


def _head_chunk(
    hidden: Tensor,
    targets: Tensor,
    head: torch.nn.Module,
    temperature: float,
    with_entropy: bool,
    entropy_grad: bool,
) -> tuple[Tensor, Tensor]:
    """log p(target) = z_target - logsumexp(z) and, if asked, H = logsumexp(z) - sum_v p_v z_v,
    with z = head(hidden) / temperature in float32, for N positions: (N,), (N,) (or empty)."""
    z = head(hidden).float() / temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, logp.new_empty(0)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        return logp, lse - (torch.softmax(z, dim=-1) * z).sum(-1)


def chunked_token_logprobs(
    hidden: Tensor,
    targets: Tensor,
    head: torch.nn.Module,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    head_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs (and entropies) of ``targets`` (N,) from ``hidden`` (N, d) through
    the output layer ``head``, ``chunk_tokens`` positions at a time, its product in
    ``head_dtype`` (None: the autocast region's dtype, else the head's own).

    With gradients on, each chunk's (chunk, vocab) logits are freed after the forward and
    recomputed, one chunk at a time, in backward, so memory holds one chunk's logits instead of
    all N: for a plain ``nn.Linear`` head by a hand-written backward that also accumulates the
    weight gradient in place, for any other head by activation checkpointing. The values equal
    the one-shot computation up to float rounding. Entropies are detached unless
    ``entropy_grad``.
    """
    with_entropy = with_entropy or entropy_grad
    if hidden.shape[0] == 0:  # no completion tokens at all
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty if with_entropy else None
    if type(head) is torch.nn.Linear:
        dtype = head_dtype or compute_dtype(hidden.device, head.weight.dtype)
        logp, entropy = _ChunkedLinearLogprobs.apply(
            hidden, head.weight, head.bias, targets, temperature, chunk_tokens, with_entropy, dtype
        )
        if not with_entropy:
            return logp, None
        return logp, entropy if entropy_grad else entropy.detach()
    if head_dtype is not None:  # any other head: outside autocast, in head_dtype
        head = _HeadIn(head, head_dtype)
    recompute = torch.is_grad_enabled()
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        args = (
            hidden[start : start + chunk_tokens],
            targets[start : start + chunk_tokens],
            head,
            temperature,
            with_entropy,
            entropy_grad,
        )
        logp, entropy = (
            checkpoint(_head_chunk, *args, use_reentrant=False) if recompute else _head_chunk(*args)
        )
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), torch.cat(entropies) if with_entropy else None


@torch.no_grad()
def supports_chunked_logprobs(model) -> bool:
    """Whether the model's logits are exactly ``get_output_embeddings()(get_decoder()(...))``,
    checked on a short sequence (a final soft-cap or logit scale, as in Gemma 2 or Cohere,
    would make the chunked path wrong, so such models keep the plain path)."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    if decoder is None or head is None:
        return False
    device = next(model.parameters()).device
    ids = torch.arange(1, 9, device=device).unsqueeze(0) % model.config.vocab_size
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids, use_cache=False).logits.float()
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
        ok = torch.allclose(head(hidden).float(), logits, atol=1e-4, rtol=1e-3)
    finally:
        model.train(was_training)
    return bool(ok)
