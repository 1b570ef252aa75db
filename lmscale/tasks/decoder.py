"""The GPT every generation, scoring and fine-tuning recipe starts from: any directory that
`lmscale.convert.pretrained.load_pretrained` reads (an lmscale export, a pretrain or
fine-tuning run, a Hugging Face GPT-2 directory), checked to hold a decoder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lmscale.convert.pretrained import load_pretrained
from lmscale.data.tokenizer import Tokenizer
from lmscale.errors import InputError
from lmscale.models import GPT
from lmscale.models.config import ModelConfig
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.generate import Generator


@dataclass(frozen=True)
class Decoder:
    config: ModelConfig
    params: dict  # {"params": {...}}, numpy leaves
    tokenizer: Tokenizer
    tokenizer_files: list[str]
    directory: str

    @property
    def model(self) -> GPT:
        return GPT(self.config)

    def generator(self, mesh_sizes: dict[str, int] | None = None) -> Generator:
        return Generator(self.model, self.params["params"], self.tokenizer,
                         make_mesh(mesh_sizes or {"data": -1}))


def load_decoder(directory: str, **runtime) -> Decoder:
    """The GPT in `directory`; `runtime` replaces ModelConfig fields that do not change the
    parameter shapes (dropout, compute_dtype, ...). Dropout is off unless given."""
    pretrained = load_pretrained(directory)
    if pretrained.config.family != "gpt":
        raise InputError(f"{directory!r} holds a {pretrained.config.family} model; this needs "
                         "a GPT (decoder) checkpoint")
    no_dropout = {"dropout": 0.0, "attention_dropout": None}
    config = dataclasses.replace(pretrained.config, **(no_dropout | runtime))
    return Decoder(config, pretrained.params, pretrained.tokenizer, pretrained.tokenizer_files,
                   directory)
