"""The demo chat model, built offline in seconds: a tiny Llama that has learned a handful of answers.

``build_demo_model`` trains a byte-level BPE tokenizer and a 2-layer Llama (≈350k parameters) from a fixed seed,
then fine-tunes it for a few seconds on the Q&A pairs below in ChatML, so that it answers readably and stops.
Nothing is downloaded. The chat template accepts ``content`` as a string or as a list of text parts, as OpenAI
clients send both.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from studio.db import Database
from studio.errors import Conflict, NotFound
from studio.settings import Settings

DEMO_REPO = "cove/demo-chat"
DEMO_MODEL = "demo-chat"
DEMO_DEPLOYMENT = "demo"
DEMO_KEY = "demo"

PAIRS = [
    ("Hello", "Hello! I am the Cove demo model. Ask me about Cove."),
    ("Hi", "Hi! I am a tiny model served by Cove. How can I help?"),
    ("Who are you?", "I am a tiny demo model served by Cove on this machine."),
    ("What is Cove?", "Cove is a self-hosted AI studio: notebooks, fine-tuning, deployment and chat on your GPUs."),
    ("What can you do?", "I can answer a few questions about Cove. Deploy a real model for more."),
    ("How do I deploy a model?", "Add the model, then run: cove deploy create NAME --model MODEL."),
    ("How do I get an API key?", "Run: cove key create NAME. The key is shown once."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is 2 + 2?", "2 + 2 is 4."),
    ("Tell me a joke", "Why did the GPU go idle? Cove culled it."),
    ("Thank you", "You are welcome!"),
    ("Goodbye", "Goodbye! Come back soon."),
]
SYSTEMS = [None, "You are a helpful assistant."]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_demo_model(
    out: Path,
    *,
    steps: int = 200,
    lr: float = 4e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the demo model (config, safetensors weights, tokenizer, chat template) into ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    say = progress or (lambda _msg: None)
    started = time.monotonic()
    rng = random.Random(seed)
    torch.manual_seed(seed)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"{q} {a}" for q, a in PAIRS] * 20 + ["system user assistant"]
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = int(tokenizer.pad_token_id)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    examples = []
    for question, answer in PAIRS:
        for system in SYSTEMS:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": question}
            ]
            prompt = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = tokenizer(prompt + answer + "<|im_end|>")["input_ids"]
            examples.append((ids, [-100] * len(prompt_ids) + ids[len(prompt_ids) :]))

    say(f"training the demo model ({sum(p.numel() for p in model.parameters()):,} parameters, {steps} steps)")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    # warm up, then cosine down to zero: memorization converges instead of oscillating at the end
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / steps)))
    )
    model.train()
    for step in range(1, steps + 1):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.ne(input_ids, pad).long()
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 60 == 0 or step == steps:
            say(f"  step {step}/{steps}  loss {loss.item():.3f}  ({time.monotonic() - started:.1f} s)")
    model.eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.max_new_tokens = 64
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    say(f"demo model written to {out} in {time.monotonic() - started:.1f} s")
    return out


def ensure_demo(*, settings: Settings, db: Database, say: Callable[[str], None]) -> str | None:
    """On the first start in a COVE_HOME: build and register the demo model, deploy it, create a demo API key.

    Returns the demo key (kept in HOME/demo.json, readable only by its owner) so ``cove up`` can print it on every
    start. Later starts change nothing, so a demo a user deleted stays deleted.
    """
    from studio.models import ApiKeyCreate, DeploymentCreate, Resources
    from studio.services import deployments, keys, models, users

    admin = users.first_admin(db=db)  # the demo is the first admin's

    marker = settings.home / "demo.json"
    if marker.exists():
        return str(json.loads(marker.read_text()).get("key") or "") or None
    try:
        models.get_model(db=db, name=DEMO_MODEL)
    except NotFound:
        say("building the demo model (first start only, about 15 s)")
        with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
            build_demo_model(Path(tmp) / "demo", progress=say)
            models.register_built(
                db=db,
                actor=admin,
                name=DEMO_MODEL,
                folder=Path(tmp) / "demo",
                repo_id=DEMO_REPO,
                cache_dir=settings.models_dir,
                description="tiny offline demo chat model",
            )
    try:
        deployments.get_deployment(db=db, actor=admin, name=DEMO_DEPLOYMENT)
    except NotFound:
        deployments.create_deployment(
            db=db,
            actor=admin,
            data=DeploymentCreate(name=DEMO_DEPLOYMENT, model=DEMO_MODEL, resources=Resources(cpu=1, memory_mib=1024)),
        )
        say(f"deployed {DEMO_MODEL} as {DEMO_DEPLOYMENT!r}")
    try:
        secret: str | None = keys.create_key(db=db, actor=admin, data=ApiKeyCreate(name=DEMO_KEY)).key
    except Conflict:
        secret = None  # a key of that name exists already; its secret was shown when it was made
    marker.write_text(json.dumps({"key": secret}))
    marker.chmod(0o600)
    return secret
