"""The model square's pure shaping: a deployment's context length, and the code to call it."""

from __future__ import annotations

import ast

from studio.ui.square import context_length, snippet


def test_the_context_is_the_plans_max_model_len_else_the_models_own() -> None:
    assert context_length(["--max-model-len", "8192", "--enforce-eager"], {"max_position_embeddings": 32768}) == 8192
    assert context_length(["--max-model-len=4096"], {}) == 4096
    assert context_length([], {"max_position_embeddings": 32768}) == 32768
    assert context_length([], {"text_config": {"max_position_embeddings": 131072}}) == 131072
    assert context_length([], {}) is None


def test_the_snippet_is_python_that_names_the_gateway_the_model_and_the_key() -> None:
    code = snippet("https://ai.example.org/", "chat", "your key app (cove_ab12…)")
    ast.parse(code)
    assert 'base_url="https://ai.example.org/v1"' in code
    assert 'model="chat"' in code
    assert "# COVE_API_KEY: your key app (cove_ab12…)" in code
