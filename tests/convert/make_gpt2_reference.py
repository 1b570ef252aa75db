"""Write tests/convert/data/tiny_gpt2/: a randomly initialised tiny Hugging Face
`GPT2LMHeadModel` (model.safetensors, config.json, a byte-level vocab.json/merges.txt) and
the logits PyTorch `transformers` computes for it, so the default suite checks conversion
parity without torch.

Run from the repository root with torch and transformers installed:
    python tests/convert/make_gpt2_reference.py
Every parameter, LayerNorm scales and biases included, is drawn at random with a large
scale, so a swapped or transposed tensor changes the logits far beyond the tolerance.
"""

import json
import os

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "tiny_gpt2")
EOT = "<|endoftext|>"


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte value 0..255 (openai/gpt-2 encoder.py)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer() -> int:
    """256 byte tokens, a few merges, then <|endoftext|>; returns the vocabulary size."""
    tokens = byte_level_alphabet()
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a")]
    tokens += ["".join(m) for m in merges] + [EOT]
    with open(os.path.join(OUT, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f, ensure_ascii=False)
    with open(os.path.join(OUT, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(tokens)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    vocab = write_tokenizer()
    torch.manual_seed(0)
    # A vocabulary table larger than the tokenizer's, as real checkpoints pad theirs.
    config = GPT2Config(vocab_size=vocab + 3, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    model.save_pretrained(OUT, safe_serialization=True)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, vocab, size=(2, 20)).astype(np.int64)
    with torch.no_grad():
        logits = model(torch.from_numpy(input_ids)).logits.numpy()
    np.savez_compressed(os.path.join(HERE, "data", "tiny_gpt2_logits.npz"),
                        input_ids=input_ids.astype(np.int32), logits=logits.astype(np.float32))
    print(f"wrote {OUT} and tiny_gpt2_logits.npz; logits std {logits.std():.2f}")


if __name__ == "__main__":
    main()
