"""Rows of a stored dataset version as a base model sees them: rendered with its chat template (its tokenizer, loaded
offline from the model version's folder) and counted in tokens, for ``studio.tokens``' percentiles, histogram and
trained-on segments. Rows are rendered and encoded a batch at a time; only two integers per row are kept."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio.chats import ColumnMap, RowError, problems_of, to_messages
from studio.datastore import rows_of
from studio.errors import InvalidSpec
from studio.tokens import Lengths, LengthStats, Segment, common_prefix, segments


class ChatRenderer:
    """A base model's tokenizer and chat template, loaded offline from its folder."""

    def __init__(self, model_folder: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a missing file; a tokenizer.json cut short
            raise InvalidSpec(
                f"the tokenizer in {model_folder} cannot be loaded: {exc!r}", hint="check the model's files"
            ) from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidSpec(
                f"the tokenizer in {model_folder} has no chat template, so chats cannot be rendered for it",
                hint="put the template in the model folder as chat_template.jinja (or as chat_template in"
                " tokenizer_config.json), and add the folder as a new version of the model",
            )
        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidSpec(
                f"the tokenizer in {model_folder} is not a fast tokenizer", hint="save tokenizer.json with the model"
            )

    def render(self, conversations: list[list[dict[str, str]]]) -> tuple[list[str], list[int]]:
        """Each conversation whole, and how many of its characters are the prompt: what its rendering without the
        last turn, with the generation prompt, has in common with it."""
        whole = [str(t) for t in self.tokenizer.apply_chat_template(conversations, tokenize=False)]
        prompts = self.tokenizer.apply_chat_template(
            [c[:-1] for c in conversations], tokenize=False, add_generation_prompt=True
        )
        return whole, [common_prefix_len(t, str(p)) for t, p in zip(whole, prompts, strict=True)]

    def measure(self, conversations: list[list[dict[str, str]]]) -> list[tuple[int, int]]:
        """(tokens, tokens of the prompt) for each conversation. Encoded in one batch by the Rust tokenizer, whose
        encodings answer which token holds a character without turning every offset into a Python object."""
        whole, prompt_chars = self.render(conversations)
        encodings = self.tokenizer.backend_tokenizer.encode_batch(whole, add_special_tokens=False)
        return [
            (len(e), _tokens_before(e, chars, len(text)))
            for e, chars, text in zip(encodings, prompt_chars, whole, strict=True)
        ]

    def offsets(self, messages: list[dict[str, str]]) -> tuple[str, int, list[tuple[int, int]]]:
        """One conversation rendered: its text, its prompt's characters, and each token's (start, end)."""
        (text,), (chars,) = self.render([messages])
        encoding = self.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
        return text, chars, list(encoding.offsets)


def _tokens_before(encoding: Any, chars: int, length: int) -> int:
    """How many tokens lie wholly before character ``chars`` of the encoded text."""
    for at in range(chars, length):
        index = encoding.char_to_token(at)
        if index is not None:
            return int(index)
    return len(encoding)


def common_prefix_len(text: str, prompt: str) -> int:
    return len(prompt) if text.startswith(prompt) else common_prefix(text, prompt)


BATCH = 1000


def measure(
    renderer: ChatRenderer,
    root: Path,
    files: Mapping[str, list[str]],
    builder: str,
    columns: ColumnMap,
    *,
    max_length: int,
    split: str = "train",
    bins: int = 20,
) -> LengthStats:
    """Token lengths of ``split``'s rows fit to train on, rendered with the base's chat template, against
    ``max_length``; rows not fit to train on are counted as dropped. Rows are rendered and encoded a batch at a
    time, and only two integers per row are kept."""
    lengths = Lengths(max_length=max_length)
    dropped = 0
    batch: list[list[dict[str, str]]] = []

    def flush() -> None:
        for whole, prompt in renderer.measure(batch):
            lengths.add(whole, prompt)
        batch.clear()

    for name in files.get(split, []):
        for _line, row in rows_of(root / name, builder):
            try:
                if not isinstance(row, Mapping):
                    raise RowError("not a JSON object")
                messages = to_messages(row, columns)
            except RowError:
                dropped += 1
                continue
            if problems_of(messages):
                dropped += 1
                continue
            batch.append(messages)
            if len(batch) >= BATCH:
                flush()
    if batch:
        flush()
    return lengths.stats(dropped=dropped, bins=bins)


def trained_preview(renderer: ChatRenderer, messages: list[dict[str, str]], *, max_length: int) -> list[Segment]:
    """One row rendered, as segments: the prompt (not trained on), the last assistant turn (trained on), and
    whatever ``max_length`` cuts off (``kept`` False)."""
    text, prompt_chars, offsets = renderer.offsets(messages)
    kept_chars = offsets[max_length - 1][1] if len(offsets) > max_length else len(text)
    return segments(text, prompt_chars=prompt_chars, kept_chars=kept_chars)
