"""A trained SentencePiece unigram model as a Hugging Face fast tokenizer (`tokenizer.json`
+ `tokenizer_config.json`), so `lmscale convert to-hf` output loads with
`AutoTokenizer.from_pretrained` and gives the ids the model was trained on.

The pieces, scores and normaliser (the compiled NFKC charsmap) are read from the model's
protobuf; whitespace handling, the `▁` word prefix, digit splitting and byte fallback are
rebuilt with `tokenizers` components. Tests compare the two encoders on real text. The one
known difference: a special-token string typed inside text ("a [SEP] b") gets a `▁` piece
before it from SentencePiece but not from `tokenizers`; lmscale inserts special tokens as
ids, never as text.
"""

from __future__ import annotations

import json
import os

from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers

from lmscale import storage
from lmscale.data.tokenizer import CLS, EOT, MASK, PAD, SEP, UNK
from lmscale.errors import InputError

UNIGRAM = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
# Piece types that are never produced by segmenting text.
SPECIAL_TYPES = (sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL,
                 sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
WORD_PREFIX = "\u2581"


def read_model(model_file: str) -> sentencepiece_model_pb2.ModelProto:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(storage.read_bytes(model_file))
    return proto


def hf_tokenizer(model_file: str, family: str) -> Tokenizer:
    """The `tokenizers` equivalent of a SentencePiece unigram model. BERT's adds
    [CLS] A [SEP] (B [SEP]) around its input, as BERT's own tokenizer does."""
    proto = read_model(model_file)
    trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != UNIGRAM:
        kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(trainer.model_type)
        raise InputError(f"{model_file!r} is a SentencePiece {kind} model; only unigram "
                         "models (lmscale's default) convert to tokenizer.json")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    tokenizer = Tokenizer(models.Unigram(pieces, trainer.unk_id, trainer.byte_fallback))
    steps = []
    if normalizer.precompiled_charsmap:
        steps.append(normalizers.Precompiled(normalizer.precompiled_charsmap))
    if normalizer.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if normalizer.add_dummy_prefix else "never"
    split = [pre_tokenizers.Metaspace(WORD_PREFIX, prepend_scheme=prepend, split=True)]
    if trainer.split_digits:
        split.append(pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(split)
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(WORD_PREFIX, " "), decoders.ByteFallback(), decoders.Fuse(),
        *([decoders.Strip(" ", 1, 0)] if normalizer.add_dummy_prefix else [])])
    specials = [p.piece for p in proto.pieces if p.type in SPECIAL_TYPES]
    tokenizer.add_special_tokens([AddedToken(s, normalized=False, special=True)
                                  for s in specials])
    if family == "bert":
        ids = {p.piece: i for i, p in enumerate(proto.pieces)}
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
            special_tokens=[(CLS, ids[CLS]), (SEP, ids[SEP])])
    return tokenizer


def write_hf_tokenizer(model_file: str, family: str, max_len: int, out_dir: str) -> None:
    """`tokenizer.json` and a `tokenizer_config.json` naming the special tokens."""
    os.makedirs(out_dir, exist_ok=True)
    hf_tokenizer(model_file, family).save(os.path.join(out_dir, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
              "unk_token": UNK, "pad_token": PAD, "cls_token": CLS, "sep_token": SEP,
              "mask_token": MASK, "eos_token": EOT}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
