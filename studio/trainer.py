"""The training process: ``python -m studio.trainer PLAN_JSON`` runs one fine-tune from a ``TrainPlan``.

It runs apart from the control plane (a supervised local process, or a Kubernetes Job's container) and talks to it
only through files and reports: it POSTs ``Progress`` to ``plan.report`` as it goes (one line per report in its
log too; a report that fails is kept and sent with the next, and reporting never stops training), saves
checkpoints into ``output_dir/checkpoints``, and when it ends writes ``result.json`` (a ``Result``) beside them,
with the LoRA adapter in ``adapter/`` and the base with the adapter merged in ``model/``. It exits 0 only when the
run succeeded.

The steps: the dataset's rows become chat messages (unfit rows dropped and counted), trained on the assistant's
last turn only (trl's conversational prompt/completion form); an evaluation split from the files or carved from
training; the base in fp32 on CPU (bf16 where CUDA supports it; 4 bits with ``quantize`` on CUDA) with a LoRA
adapter; trl's SFTTrainer. A loss that becomes NaN or runs away stops the run at the last good checkpoint
(DIVERGED); running out of memory says what to lower (OUT_OF_MEMORY); SIGTERM stops at the step's end with a
checkpoint saved (STOPPED, exit 1); ``plan.resume`` goes on from the newest checkpoint. At the end: evaluation
loss and perplexity, a few answers of the base and the candidate side by side, the adapter, the merged model
(merged into the base reloaded unquantized, never into a 4-bit one) checked to load.

``model_shape(folder)`` is for the control plane: a model folder's parameter count and LoRA targets, read from
its config on the meta device (no weights loaded).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from studio.finetuning import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    MERGED_DIR,
    RESULT_FILE,
    LossWatch,
    Metrics,
    ModelShape,
    Outcome,
    Progress,
    Result,
    Sample,
    TrainPlan,
    target_candidates,
)

SAMPLE_COUNT = 3
SAMPLE_TOKENS = 64
REPORT_TIMEOUT_S = 3.0
KEEP_CHECKPOINTS = 3


class Failure(Exception):
    """A run that cannot go on, with its outcome and a message saying what to do."""

    def __init__(self, outcome: Outcome, message: str, *, last_checkpoint: int | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.last_checkpoint = last_checkpoint


# ------------------------------------------------------------------------------------------------ reporting


class Reporter:
    """Prints one line per report and POSTs it to the plan's report URL; failed reports wait for the next."""

    def __init__(self, plan: TrainPlan) -> None:
        self.plan = plan
        self.pending: list[dict[str, Any]] = []
        self.client: Any = None
        if plan.report is not None:
            import httpx

            self.client = httpx.Client(
                timeout=REPORT_TIMEOUT_S, headers={"Authorization": f"Bearer {plan.report.token}"}
            )

    def __call__(self, progress: Progress) -> None:
        print(line_of(progress), flush=True)
        if self.client is None or self.plan.report is None:
            return
        self.pending.append(progress.model_dump(mode="json"))
        del self.pending[:-100]  # a control plane away for long gets the newest hundred
        while self.pending:
            try:
                answer = self.client.post(self.plan.report.url, json=self.pending[0])
                answer.raise_for_status()
            except Exception as exc:  # noqa: BLE001 - reporting never stops training
                print(f"report not delivered ({type(exc).__name__}: {exc}); kept for the next", flush=True)
                return
            self.pending.pop(0)


def line_of(p: Progress) -> str:
    """The log's line for one report: its phase, what it says, and its message."""
    return " ".join([f"[{p.phase}]", *p.words(), *([p.message] if p.message else [])])


# ----------------------------------------------------------------------------------------------------- data


def load_splits(plan: TrainPlan, say: Any) -> tuple[Any, Any]:
    """(train, eval or None) as datasets of conversational prompt/completion rows: the prompt is every turn but
    the last, the completion the assistant's last turn, so the loss is on the answer only."""
    import datasets

    from studio.chats import ColumnMap, RowError, problems_of, to_messages
    from studio.datastore import rows_of

    datasets.disable_progress_bars()
    columns = ColumnMap.model_validate({"format": plan.dataset.format, "columns": plan.dataset.columns})
    splits: dict[str, Any] = {}
    for split, files in plan.dataset.files.items():
        rows, dropped, first = [], 0, ""
        # read as validation read them (every CSV cell text, JSONL by line), so what trains is what was checked
        for name in files:
            for line, row in rows_of(Path(name), plan.dataset.builder):
                try:
                    if not isinstance(row, dict):
                        raise RowError("not a JSON object")
                    messages = to_messages(row, columns)
                    wrong = problems_of(messages)
                    if wrong:
                        raise RowError("; ".join(wrong))
                except RowError as exc:
                    dropped += 1
                    first = first or f"{Path(name).name} line {line}: {exc}"
                    continue
                rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
        if dropped:
            say(f"{split}: {dropped} row{'s' if dropped != 1 else ''} dropped as unfit to train on (first: {first})")
        splits[split] = datasets.Dataset.from_list(rows) if rows else None
    train = splits.get("train")
    if train is None:
        raise Failure(Outcome.FAILED, "the dataset has no rows fit to train on in its train split")
    evaluation = splits.get("eval")
    fraction = plan.settings.eval_fraction
    if evaluation is None and fraction > 0 and len(train) >= 2:
        held = max(1, round(len(train) * fraction))
        parts = train.train_test_split(test_size=held, seed=plan.settings.seed)
        train, evaluation = parts["train"], parts["test"]
    say(f"{len(train)} training rows, {len(evaluation) if evaluation is not None else 'no'} evaluation rows")
    return train, evaluation


# ---------------------------------------------------------------------------------------------------- model


def model_shape(folder: str | Path) -> ModelShape:
    """A model folder's parameter count and the names LoRA can target, from its config alone (the model is built
    on the meta device: no weights are read, so it is cheap for any size)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return ModelShape(parameters=sum(p.numel() for p in model.parameters()), targets=_targets(model))


def _targets(model: Any) -> list[str]:
    import torch

    return target_candidates(name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear))


def _device(plan: TrainPlan) -> tuple[str, Any]:
    """("cpu" | "cuda", dtype): fp32 on CPU, bf16 where CUDA supports it."""
    import torch

    if not plan.use_cpu and torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


def load_tokenizer(plan: TrainPlan) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(plan.base_path)
    if not getattr(tokenizer, "chat_template", None):
        raise Failure(
            Outcome.FAILED,
            f"{plan.base_name} has no chat template, so its conversations cannot be laid out for training: "
            "fine-tune an instruct/chat version of the model, or give it one (a chat_template.jinja file in the "
            "model folder, or chat_template in its tokenizer_config.json) and add it as a new version",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(plan: TrainPlan, say: Any) -> Any:
    """The base with a LoRA adapter on the plan's target modules."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    settings = plan.settings
    device, dtype = _device(plan)
    extra: dict[str, Any] = {}
    if settings.quantize:
        if device != "cuda":
            raise Failure(
                Outcome.FAILED,
                "quantize (QLoRA) needs a CUDA GPU; this run is on the CPU: turn quantize off to train in full "
                "precision, or run the job on a GPU",
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise Failure(
                Outcome.FAILED, "quantize (QLoRA) needs bitsandbytes, which this image lacks: turn quantize off"
            ) from exc
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    model: Any = AutoModelForCausalLM.from_pretrained(plan.base_path, dtype=dtype, **extra)
    if device == "cuda" and not settings.quantize:
        model = model.to(device)
    if settings.quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    candidates = _targets(model)
    if settings.target_modules != "all-linear":
        unknown = [name for name in settings.target_modules if name not in candidates]
        if unknown:
            raise Failure(
                Outcome.FAILED,
                f"{plan.base_name} has no module named {', '.join(unknown)}: it can target "
                f"{', '.join(candidates)} (or all-linear)",
            )
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    say(f"{plan.base_name} on {device} ({dtype}): {trainable:,} of {total:,} parameters trained")
    return model


# --------------------------------------------------------------------------------------------------- checkpoints


def checkpoint_steps(folder: Path) -> list[int]:
    """The steps of the checkpoints saved in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = (re.fullmatch(r"checkpoint-(\d+)", p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def drop_checkpoints_after(folder: Path, step: int) -> None:
    for later in checkpoint_steps(folder):
        if later > step:
            shutil.rmtree(folder / f"checkpoint-{later}", ignore_errors=True)


# ----------------------------------------------------------------------------------------------------- the run


class Stop:
    """Set by SIGTERM: the run stops at the end of the step it is in, with a checkpoint."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: Any) -> None:
            cls.requested = True
            print("stop requested: stopping at the end of this step", flush=True)

        signal.signal(signal.SIGTERM, handler)


def make_callback(report: Reporter) -> Any:
    import torch
    from transformers import TrainerCallback

    class Watch(TrainerCallback):
        """Reports progress, vetoes checkpoints of a diverged run, and stops on SIGTERM."""

        def __init__(self) -> None:
            self.loss = LossWatch()
            self.diverged: str | None = None
            self.started = time.monotonic()
            self.first_step = 0
            self.first_tokens = 0
            self.checkpoint: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.monotonic()
            self.first_step = state.global_step
            self.first_tokens = state.num_input_tokens_seen
            self.loss.last_good = state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if Stop.requested:
                control.should_training_stop = True
                control.should_save = True
            if control.should_save:
                control.should_log = True  # the loss is judged before a checkpoint is kept
                model = kwargs.get("model")
                if model is not None and not all(
                    bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad
                ):
                    self._diverge(control, f"the adapter's weights became NaN or infinite at step {state.global_step}")
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> Any:
            logs = logs or {}
            if "eval_loss" in logs:  # an evaluation during training (each checkpoint): a point of the eval curve
                value = float(logs["eval_loss"])
                finite = value if math.isfinite(value) else None
                report(Progress(step=state.global_step, total_steps=state.max_steps, eval_loss=finite))
                return control
            if "loss" not in logs:
                return control
            loss = float(logs["loss"])
            reason = self.loss.observe(state.global_step, loss)
            if reason:
                self._diverge(control, reason)
            elapsed = max(1e-6, time.monotonic() - self.started)
            done = state.global_step - self.first_step
            tokens = state.num_input_tokens_seen - self.first_tokens
            left = state.max_steps - state.global_step
            report(
                Progress(
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch,
                    loss=loss if math.isfinite(loss) else None,
                    learning_rate=logs.get("learning_rate"),
                    tokens_per_s=tokens / elapsed if tokens else None,
                    eta_s=left * elapsed / done if done else None,
                    checkpoint=self.checkpoint,
                    message=self.diverged or "",
                )
            )
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.checkpoint = state.global_step

        def _diverge(self, control: Any, reason: str) -> None:
            self.diverged = self.diverged or reason
            control.should_save = False
            control.should_training_stop = True

    return Watch()


def run(plan: TrainPlan, report: Reporter) -> Result:
    """One fine-tune, start to end; raises Failure (or the error that stopped it)."""
    started = time.monotonic()

    def say(message: str) -> None:
        report(Progress(phase="loading", message=message))

    out = Path(plan.output_dir)
    checkpoints = out / CHECKPOINTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    settings = plan.settings
    resume_from: str | None = None
    if plan.resume:
        steps = checkpoint_steps(checkpoints)
        if steps:
            resume_from = str(checkpoints / f"checkpoint-{steps[-1]}")
            say(f"resuming from step {steps[-1]}")
        else:
            say(f"no checkpoint in {checkpoints}: starting over")
    tokenizer = load_tokenizer(plan)
    train, evaluation = load_splits(plan, say)
    model = load_model(plan, say)
    device, dtype = _device(plan)
    import torch
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(
        output_dir=str(checkpoints),
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant_with_warmup" if settings.schedule == "constant" else str(settings.schedule),
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        max_length=settings.max_length,
        packing=settings.packing,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=KEEP_CHECKPOINTS,
        logging_steps=settings.log_every,
        # the held-out loss at each checkpoint, beside the training loss (none without an eval split)
        eval_strategy="steps" if evaluation is not None else "no",
        eval_steps=settings.save_every,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    watch = make_callback(report)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        callbacks=[watch],
    )
    trainer.remove_callback(PrinterCallback)  # the reports are the log's lines
    trained = trainer.train(resume_from_checkpoint=resume_from)
    steps_done = trainer.state.global_step
    if watch.diverged:
        drop_checkpoints_after(checkpoints, watch.loss.last_good)
        kept = checkpoint_steps(checkpoints)
        last = kept[-1] if kept else None
        where = f"checkpoint {last} is kept" if last is not None else "no good checkpoint was saved"
        raise Failure(
            Outcome.DIVERGED,
            f"training diverged: {watch.diverged}. Stopped; {where}. Lower the learning rate "
            f"(it was {settings.learning_rate:g}; try a tenth of it), or raise warmup_ratio",
            last_checkpoint=last,
        )
    if Stop.requested:
        kept = checkpoint_steps(checkpoints)
        last = kept[-1] if kept else None
        raise Failure(
            Outcome.STOPPED,
            f"stopped at step {steps_done} as asked; checkpoint {last} saved: resume to go on",
            last_checkpoint=last,
        )
    metrics = Metrics(
        train_loss=trained.training_loss,
        steps=steps_done,
        tokens=int(trainer.state.num_input_tokens_seen),
        train_seconds=round(float(trained.metrics.get("train_runtime", 0.0)), 3),
    )
    if evaluation is not None:
        report(Progress(step=steps_done, total_steps=steps_done, phase="evaluating"))
        eval_loss = float(trainer.evaluate()["eval_loss"])
        metrics.eval_loss = eval_loss
        metrics.perplexity = math.exp(eval_loss) if eval_loss < 700 else math.inf
        report(Progress(step=steps_done, total_steps=steps_done, phase="evaluating", eval_loss=eval_loss))
    peft_model: Any = trainer.model
    metrics.samples = samples(peft_model, tokenizer, plan, evaluation if evaluation is not None else train)
    report(Progress(step=steps_done, total_steps=steps_done, phase="merging", message="saving the adapter"))
    adapter_dir = out / ADAPTER_DIR
    peft_model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    del trainer, peft_model, model
    merged_dir = merge(plan, adapter_dir, out / MERGED_DIR, tokenizer)
    metrics.seconds = round(time.monotonic() - started, 2)
    kept = checkpoint_steps(checkpoints)
    return Result(
        outcome=Outcome.SUCCEEDED,
        message=f"trained {steps_done} steps; merged model in {merged_dir}",
        metrics=metrics,
        model_dir=str(merged_dir),
        adapter_dir=str(adapter_dir),
        last_checkpoint=kept[-1] if kept else None,
    )


def prompts_of(plan: TrainPlan, rows: Any) -> list[str]:
    if plan.sample_prompts:
        return plan.sample_prompts[:SAMPLE_COUNT]
    found: list[str] = []
    for row in rows:
        first = next((turn["content"] for turn in row["prompt"] if turn["role"] == "user"), None)
        if first and first not in found:
            found.append(first)
        if len(found) == SAMPLE_COUNT:
            break
    return found


def answer(model: Any, tokenizer: Any, prompt: str) -> str:
    """The model's greedy answer to one user turn, laid out with the chat template."""
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=SAMPLE_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def samples(model: Any, tokenizer: Any, plan: TrainPlan, rows: Any) -> list[Sample]:
    """The base's answers (adapter disabled) beside the candidate's, for up to three prompts."""
    # trl leaves gradient checkpointing on and the model in train mode: generation from it is garbage otherwise
    model.eval()
    if hasattr(model, "gradient_checkpointing_disable"):
        model.gradient_checkpointing_disable()
    found = []
    for prompt in prompts_of(plan, rows):
        with model.disable_adapter():
            base = answer(model, tokenizer, prompt)
        found.append(Sample(prompt=prompt, base=base, candidate=answer(model, tokenizer, prompt)))
    return found


def merge(plan: TrainPlan, adapter_dir: Path, merged_dir: Path, tokenizer: Any) -> Path:
    """The base reloaded unquantized, in its own precision, with the adapter merged in; checked to load."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.modelstore import inspect_folder

    base = AutoModelForCausalLM.from_pretrained(plan.base_path, dtype="auto")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merged.save_pretrained(str(merged_dir))
    tokenizer.save_pretrained(str(merged_dir))
    inspect_folder(merged_dir)
    AutoModelForCausalLM.from_pretrained(str(merged_dir))
    return merged_dir


def write_result(out: Path, result: Result) -> None:
    """result.json, written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{RESULT_FILE}.tmp"
    temporary.write_text(result.model_dump_json(indent=2))
    os.replace(temporary, out / RESULT_FILE)


def _out_of_memory(exc: BaseException) -> bool:
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m studio.trainer PLAN_JSON", file=sys.stderr)
        return 2
    plan = TrainPlan.model_validate_json(Path(args[0]).read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    Stop.install()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    report = Reporter(plan)
    report(Progress(phase="loading", message=f"fine-tuning {plan.base_name} (job {plan.job})"))
    try:
        result = run(plan, report)
    except Failure as failure:
        result = Result(outcome=failure.outcome, message=failure.message, last_checkpoint=failure.last_checkpoint)
    except Exception as exc:  # noqa: BLE001 - every ending leaves a result
        traceback.print_exc()
        steps = checkpoint_steps(Path(plan.output_dir) / CHECKPOINTS_DIR)
        last = steps[-1] if steps else None
        if _out_of_memory(exc):
            lower = "batch_size (with grad_accum raised to keep the effective batch), max_length"
            gpu = ", or turn on quantize (QLoRA)" if not plan.use_cpu else ""
            result = Result(
                outcome=Outcome.OUT_OF_MEMORY,
                message=f"out of memory ({exc}): lower {lower}{gpu}",
                last_checkpoint=last,
            )
        else:
            result = Result(outcome=Outcome.FAILED, message=f"{type(exc).__name__}: {exc}", last_checkpoint=last)
    write_result(Path(plan.output_dir), result)
    report(Progress(phase="done", message=f"{result.outcome}: {result.message}"))
    return 0 if result.outcome is Outcome.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
