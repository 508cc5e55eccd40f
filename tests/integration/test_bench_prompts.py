"""Prompts sized by a model's tokenizer: a prompt of the wanted length is that many tokens when the same tokenizer
counts it again, shared prefix included."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.benchmark import Workload
from studio.loadgen import WORDS, Prompter


@pytest.mark.torch  # imports transformers (seconds), as the model-building tests do
def test_prompts_from_a_tokenizer_have_the_wanted_token_count(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(tmp_path)
    workload = Workload(input_len=50, range_ratio=0.5, prefix_len=10, seed=3)
    prompter = Prompter(workload, str(tmp_path))
    prompts = [prompter.prompt(i, workload.shape(i)) for i in range(5)]
    for i, text in enumerate(prompts):
        shape = workload.shape(i)
        assert len(tokenizer.encode(text, add_special_tokens=False)) == shape.prefix + shape.input
    assert len({" ".join(p.split()[:10]) for p in prompts}) == 1  # one shared prefix
    assert len(set(prompts)) == 5
    assert Prompter(workload, str(tmp_path)).prompt(2, workload.shape(2)) == prompts[2]  # reproducible
