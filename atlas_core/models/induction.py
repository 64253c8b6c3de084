"""A two-layer attention-only transformer trained to copy in context: its induction circuit (a previous-token
head in layer 0, an induction head in layer 1; Olsson et al., 2022) is the published mechanism the atlas's
head ablation must find.

The model is a stock ``LlamaForCausalLM`` (2 layers, ``HEADS`` heads each, rotary positions, no absolute
position anywhere in the residual) whose MLPs are zero and frozen, so only attention (and the embeddings,
norms and LM head) learn. It is trained deterministically on CPU from a seed on sequences of distinct random
tokens in which one segment is repeated once; the segment's length and where it starts vary per sequence,
so no fixed offset copies it, and distinct letters make every match unique. With rotary positions a layer-0 head cannot write "where" a token is, only
"what came just before" (relative attention), so the only route to the token after an earlier match is the
classic one: a previous-token head in layer 0 and, composing with its output in the keys, an induction head
in layer 1. Left alone, both heads of a layer learn the same role and each covers for the other under
single-head ablation; a group lasso on each head's weights (:func:`_head_norms`), ramped in once the circuit
has formed, leaves one head per role and the others idle. ``python -m atlas_core.models.induction [OUT]`` re-makes the shipped weights
(``atlas_core/data/induction/``, a Hugging Face folder: config, safetensors, tokenizer, ``tasks/``).

Measured (seed 0, 1000 steps, one thread, ~1 min here; 256 fresh sequences, next-letter accuracy over the
repeats): intact 1.000, previous-token and induction heads zeroed 0.012, all four heads zeroed 0.012. Without
the group lasso (same data, 800 steps): intact 1.000 but both layer-1 heads induction heads (induction scores
0.976, 0.985) and the circuit's two heads zeroed still 0.576: the redundancy the lasso removes.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch
import transformers

from atlas_core.data import DATA_DIR
from atlas_core.models.tiny import tiny_tokenizer

FOLDER = DATA_DIR / "induction"
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # one byte, one token each
SEQ = 32  # tokens per training sequence
SEG = (4, 12)  # the repeated segment's length, inclusive
HEADS, D_MODEL = 2, 64
SEED, STEPS, BATCH, LR = 0, 1000, 64, 3e-3
PRUNE = 3e-2  # group-lasso weight on each head's value and output projections (see _head_norms)
THREADS = 1
FAMILY = "induction_copy"


def config(vocab_size: int) -> transformers.LlamaConfig:
    pad = vocab_size - 1
    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=D_MODEL,
        intermediate_size=8,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=D_MODEL // HEADS,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=pad,
        eos_token_id=pad,
        bos_token_id=pad,
        initializer_range=0.05,
        attention_dropout=0.0,
    )


def letter_ids(tok) -> torch.Tensor:
    return torch.tensor([tok.encode(c, add_special_tokens=False)[0] for c in ALPHABET])


def sequences(gen: torch.Generator, letters: torch.Tensor, n: int, seq: int = SEQ, seg: tuple[int, int] = SEG):
    """``n`` sequences of ``seq`` tokens: distinct random letters, one segment of a random length in ``seg``
    starting at a random place repeated right after itself. Returns the tokens [n, seq], the segment's
    start and length per sequence, and the mask of the positions whose next token the repeat determines
    (the repeat's first letter through its last but one)."""
    x = torch.empty(n, seq, dtype=torch.long)
    mask = torch.zeros(n, seq, dtype=torch.bool)
    lengths = torch.randint(seg[0], seg[1] + 1, (n,), generator=gen)
    starts = torch.empty(n, dtype=torch.long)
    for b in range(n):
        k = int(lengths[b])
        s = int(torch.randint(0, seq - 2 * k + 1, (1,), generator=gen))
        fresh = letters[torch.randperm(len(letters), generator=gen)[: seq - k]]
        x[b, : s + k] = fresh[: s + k]
        x[b, s + k : s + 2 * k] = fresh[s : s + k]
        x[b, s + 2 * k :] = fresh[s + k :]
        mask[b, s + k : s + 2 * k - 1] = True  # at the repeat's i-th letter, the next is the segment's (i+1)-th
        starts[b] = s
    return x, starts, lengths, mask


def _freeze_mlps(model) -> None:
    for layer in model.model.layers:  # attention only: the MLPs write zero and never learn
        for p in layer.mlp.parameters():
            p.data.zero_()
            p.requires_grad_(False)


def _head_norms(model) -> torch.Tensor:
    """Per head, the norms of its query, key and value rows plus that of its output-projection columns. Penalised as a
    group lasso, it drives the heads a circuit does not need to zero, so the one that learns a role holds
    it alone (without it, both heads of a layer learn the same role and each covers for the other under
    single-head ablation: redundancy, not the one-head mechanism to find)."""
    hd = model.config.head_dim
    out = []
    for layer in model.model.layers:
        a = layer.self_attn
        for h in range(model.config.num_attention_heads):
            rows = slice(h * hd, (h + 1) * hd)
            out.append(
                sum(w.weight[rows].norm() for w in (a.q_proj, a.k_proj, a.v_proj)) + a.o_proj.weight[:, rows].norm()
            )
    return torch.stack(out)


def train(seed: int = SEED, steps: int = STEPS, threads: int | None = THREADS, log=None):
    """The trained model and its tokenizer; deterministic for a seed at a given thread count and CPU (the
    thread count and deterministic-algorithms flag are set for the training and restored after it)."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(seed, steps, log)
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def _train(seed: int, steps: int, log):
    tok = tiny_tokenizer()
    letters = letter_ids(tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = config(len(tok))
        cfg._attn_implementation = "eager"
        model = transformers.LlamaForCausalLM(cfg)
    _freeze_mlps(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 100) * max(0.05, 1 - i / max(steps, 1)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x, _, _, mask = sequences(gen, letters, BATCH)
        logits = model(x).logits[:, :-1]
        m = mask[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits[m], x[:, 1:][m])
        opt.zero_grad()
        ramp = min(1.0, max(0.0, (step - steps / 4) / (steps / 4)))  # after the circuit has formed
        (loss + ramp * PRUNE * _head_norms(model).sum()).backward()
        opt.step()
        sched.step()
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(f"step {step} loss {float(loss):.4f} head norms {[round(float(v), 2) for v in _head_norms(model)]}")
    model.eval()
    model.config._attn_implementation = "sdpa"
    return model, tok, float(loss.detach())


def task_family(n_items: int = 16, seed: int = 1) -> dict:
    """Prompts cut inside a repeated segment (lengths and offsets as in training); the target is the letter
    that followed the last one at its first occurrence. Contrast: the same prefix with a fresh segment."""
    rng = random.Random(f"induction/{seed}")
    items, contrast = [], []
    for i in range(n_items):
        k = SEG[0] + 2 + i % (SEG[1] - SEG[0] - 1)  # segment length
        s = rng.randrange(0, SEQ - 2 * k + 1)
        cut = 1 + rng.randrange(k - 1)  # letters of the repeat shown, 1..k-1
        fresh = rng.sample(ALPHABET, SEQ - k)
        text = "".join(fresh[: s + k]) + "".join(fresh[s : s + cut])
        items.append({"id": f"ind{i}", "prompt": text, "target": fresh[s + cut]})
        other = "".join(fresh[: s + k]) + "".join(fresh[s + k : s + k + cut])
        contrast.append({"prompt": other, "target": fresh[s + cut]})
    return {
        "family": FAMILY,
        "description": "continue a repeated random segment (in-context copying)",
        "items": items,
        "contrast": contrast,
    }


def write(folder: Path, seed: int = SEED, steps: int = STEPS, log=None) -> float:
    model, tok, loss = train(seed, steps, log=log)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "tasks").mkdir(exist_ok=True)
    (folder / "tasks" / f"{FAMILY}.json").write_text(json.dumps(task_family(), indent=1) + "\n")
    return loss


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER
    t0 = time.perf_counter()
    loss = write(out, log=print)
    print(f"final loss {loss:.4f} -> {out} ({time.perf_counter() - t0:.0f} s)")
