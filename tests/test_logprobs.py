"""Per-token log-probs of padded batches equal those of each sequence run alone."""

import torch
from transformers import AutoModelForCausalLM

from frugalrl.algo.logprobs import completion_logprobs, pack_batch


def test_padded_batch_matches_unpadded_forward(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    completions = [[20, 21], [22, 23, 24, 25]]
    batch = pack_batch(prompts, completions, pad_id=0)
    assert batch["completion_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    temperature = 0.7
    with torch.no_grad():
        logp, entropy = completion_logprobs(model, batch, temperature, with_entropy=True)
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float() / temperature
        ref = torch.log_softmax(logits, -1)
        # token c[j] is predicted by the logits at position len(p) + j - 1
        expected = torch.stack([ref[len(p) + j - 1, t] for j, t in enumerate(c)])
        torch.testing.assert_close(logp[row, : len(c)], expected, atol=1e-5, rtol=1e-5)
        probs = ref.exp()
        ent = -(probs * ref).sum(-1)[len(p) - 1 : len(p) + len(c) - 1]
        torch.testing.assert_close(entropy[row, : len(c)], ent, atol=1e-5, rtol=1e-5)
