"""Write tests/convert/data/minilm_reference.npz: PyTorch `transformers` outputs of the real
all-MiniLM-L6-v2 checkpoint, so the default test suite checks conversion parity without
torch.

Run from the repository root with torch and transformers installed (any environment):
    python tests/convert/make_minilm_reference.py
The file holds the inputs (ids from the checkpoint's own tokenizer), every 24th hidden
dimension of the last hidden state (16 of 384, spanning all heads) and of the pooled output.
"""

import os

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_DIR = os.path.normpath(os.path.join(HERE, "../../../shared/data/models/all-MiniLM-L6-v2"))
OUT = os.path.join(HERE, "data", "minilm_reference.npz")
DIMS = slice(None, None, 24)

# Different lengths, so the batch is padded; the last is a question/passage pair, so
# segment B's type embeddings are used too.
SENTENCES = [
    ("The Normans gave their name to Normandy, a region in France.", None),
    ("Hello world!", None),
    ("Super Bowl 50 was an American football game to determine the champion of the NFL "
     "for the 2015 season.", None),
    ("Which river flows through Paris?", "The Seine flows through Paris before reaching "
     "the English Channel at Le Havre."),
]


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = BertModel.from_pretrained(MODEL_DIR).eval()
    encoded = [tokenizer(a, b) for a, b in SENTENCES]
    length = max(len(e["input_ids"]) for e in encoded)
    batch = {}
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        # Padding as transformers pads: id 0 ([PAD]), segment 0, attention 0.
        rows = [e[key] + [0] * (length - len(e[key])) for e in encoded]
        batch[key] = torch.tensor(rows)
    with torch.no_grad():
        out = model(**batch)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(
        OUT,
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        token_type_ids=batch["token_type_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int32),
        hidden=out.last_hidden_state.numpy()[..., DIMS].astype(np.float32),
        pooled=out.pooler_output.numpy()[..., DIMS].astype(np.float32),
        dims=np.arange(384)[DIMS].astype(np.int32),
    )
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
