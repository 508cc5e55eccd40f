"""Fine-tuning's values: the settings a user picks (with defaults per model size), the plan a training process is
given, what it reports while it runs, and what it leaves when it ends.

A job is planned by the control plane (``TrainPlan``, written as ``plan.json`` into the job's folder), run apart
from it by ``python -m studio.trainer PLAN`` (a supervised local process, or a Kubernetes Job), which reports
``Progress`` as it goes and writes a ``Result`` (``result.json``) beside its checkpoints when it ends. The control
plane registers the result as a new model version with its ``Lineage``.

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
CHECKPOINTS_DIR = "checkpoints"  # checkpoint-<step>/ folders, as the trainer saves them
ADAPTER_DIR = "adapter"  # the LoRA adapter (adapter_config.json, adapter_model.safetensors)
MERGED_DIR = "model"  # the base with the adapter merged in, in the base's precision: a plain model folder


class Schedule(enum.StrEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    CONSTANT = "constant"


class Serving(enum.StrEnum):
    """How the new version is served: merged weights (any runtime), or the adapter on its base (vLLM's LoRA)."""

    MERGED = "merged"
    ADAPTER = "adapter"


class TrainSettings(BaseModel):
    """What a user may set; every field has a default (``defaults_for`` picks them by model size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(default=16, ge=1, le=1024)
    alpha: int = Field(default=32, ge=1, le=4096)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"  # or names among the model's own modules
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    schedule: Schedule = Schedule.COSINE
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    epochs: float = Field(default=3.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1)  # given: wins over epochs
    batch_size: int = Field(default=4, ge=1, le=1024)
    grad_accum: int = Field(default=4, ge=1, le=1024)
    max_length: int = Field(default=1024, ge=16, le=131072)  # tokens; longer rows are truncated
    packing: bool = False
    eval_fraction: float = Field(default=0.1, ge=0, lt=0.5)  # held out when the dataset has no eval split
    seed: int = 42
    quantize: bool = False  # QLoRA: the base loaded in 4 bits (GPUs only); the merge is always in full precision
    serving: Serving = Serving.MERGED
    save_every: int = Field(default=50, ge=1)  # steps between checkpoints
    log_every: int = Field(default=5, ge=1)  # steps between progress reports

    @property
    def hash(self) -> str:
        """Names these settings in a version's lineage."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def defaults_for(parameters: int) -> dict[str, Any]:
    """Defaults by model size (its parameter count): small models take a larger rank and learning rate, larger ones
    a smaller batch. A user's own values are laid over these."""
    if parameters < 50_000_000:  # tiny models (the demo model): few rows, many steps, high rate
        return {"rank": 8, "alpha": 16, "learning_rate": 5e-3, "batch_size": 8, "grad_accum": 1, "max_length": 256}
    if parameters < 2_000_000_000:
        return {"rank": 16, "alpha": 32, "learning_rate": 2e-4, "batch_size": 8, "grad_accum": 2}
    if parameters < 15_000_000_000:
        return {"rank": 16, "alpha": 32, "learning_rate": 1e-4, "batch_size": 4, "grad_accum": 4}
    return {"rank": 32, "alpha": 64, "learning_rate": 1e-4, "batch_size": 1, "grad_accum": 16}


class DatasetFiles(BaseModel):
    """A dataset version's files as the trainer loads them with ``datasets.load_dataset(builder, data_files=…)``."""

    builder: Literal["json", "csv", "parquet"]
    files: dict[str, list[str]]  # split ("train", "eval") → absolute paths
    columns: dict[str, str]  # the column map (``studio.chats.ColumnMap`` as a mapping)
    format: str  # ``studio.chats.Format``


class Report(BaseModel):
    """Where progress goes: ``POST {url}`` with ``Authorization: Bearer {token}`` (the job's own token)."""

    url: str
    token: str = Field(repr=False)


class TrainPlan(BaseModel):
    """Everything one training run needs: written by the control plane, read by ``studio.trainer``."""

    model_config = ConfigDict(extra="forbid")

    job: str
    base_path: str  # the base model's folder
    base_name: str  # "model@version", for lineage and messages
    dataset: DatasetFiles
    settings: TrainSettings
    output_dir: str  # checkpoints/, adapter/, model/, result.json
    report: Report | None = None  # None: progress goes to the log only
    resume: bool = False  # go on from the newest checkpoint in output_dir/checkpoints
    sample_prompts: list[str] = []  # asked of the base and the candidate at the end; empty: the eval split's first
    use_cpu: bool = True


class Progress(BaseModel):
    """One report from a running job; every field but ``step`` may be missing from one report."""

    step: int = 0
    total_steps: int = 0
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    phase: Literal["loading", "training", "evaluating", "merging", "done"] = "training"
    checkpoint: int | None = None  # the step of the newest checkpoint saved
    message: str = ""

    def words(self) -> list[str]:
        """What the report says, part by part, for people: the trainer's log line and the CLI's progress line."""
        parts = [f"step {self.step}/{self.total_steps}"] if self.total_steps else []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch:.2f}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval loss {self.eval_loss:.4f}")
        if self.learning_rate is not None:
            parts.append(f"lr {self.learning_rate:.2e}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.0f} tokens/s")
        if self.eta_s is not None:
            parts.append(f"ETA {self.eta_s:.0f} s")
        if self.checkpoint is not None:
            parts.append(f"checkpoint {self.checkpoint}")
        return parts


class Sample(BaseModel):
    prompt: str
    base: str
    candidate: str


class Metrics(BaseModel):
    train_loss: float | None = None
    eval_loss: float | None = None
    perplexity: float | None = None
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0  # the whole run: loading, training, evaluation, samples, merge
    train_seconds: float = 0.0  # the training loop alone (throughput = tokens / train_seconds)
    samples: list[Sample] = []


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DIVERGED = "diverged"  # loss became NaN or ran away: stopped at the last good checkpoint
    OUT_OF_MEMORY = "out_of_memory"
    STOPPED = "stopped"  # cancelled (SIGTERM): stopped at a step's end with a checkpoint saved, resumable
    FAILED = "failed"  # anything else: see message


class Result(BaseModel):
    """What a run leaves in ``result.json`` as it ends (a killed run leaves none: its job is Failed, resumable)."""

    outcome: Outcome
    message: str = ""
    metrics: Metrics = Metrics()
    model_dir: str | None = None  # the merged model folder (``MERGED_DIR``), when it exists
    adapter_dir: str | None = None
    last_checkpoint: int | None = None  # the newest good checkpoint's step, to resume from


class Lineage(BaseModel):
    """Where a model version came from, when Cove made it."""

    base: str  # "model@version"
    base_revision: str | None = None
    dataset: str  # "dataset@version"
    dataset_sha256: str
    settings_hash: str
    settings: dict[str, Any] = {}
    job: str
    metrics: Metrics = Metrics()
    serving: Serving = Serving.MERGED


# ------------------------------------------------------------------------------------------ before a launch


class ModelShape(BaseModel):
    """What the control plane offers before a launch: the parameter count (for ``defaults_for`` and ``estimate``)
    and the module names LoRA can target (``target_candidates`` of the model's linear layers)."""

    parameters: int
    targets: list[str]


def target_candidates(module_names: Iterable[str], *, exclude: Iterable[str] = ("lm_head",)) -> list[str]:
    """The distinct leaf names of a model's linear layers (``model.layers.0.self_attn.q_proj`` → ``q_proj``), in
    the order first met, leaving out the output head (as peft's ``all-linear`` does)."""
    left_out = set(exclude)
    found: dict[str, None] = {}
    for name in module_names:
        leaf = name.rsplit(".", 1)[-1]
        if leaf and leaf not in left_out:
            found.setdefault(leaf, None)
    return list(found)


class Estimate(BaseModel):
    memory_mib: int
    seconds: float


# Calibrated roughly on a 2-core x86 CPU (torch 2.13, fp32, trl's gradient checkpointing on): the tiny demo model
# (350k parameters) runs ~0.07 s a step at batch 8 whatever its length (overhead-bound), and a step's compute is
# about 8 x parameters x tokens floating-point operations (forward, backward, recomputation) at ~20 GFLOP/s.
CPU_FLOPS = 20e9
STEP_OVERHEAD_S = 0.06


def estimate(
    parameters: int, settings: TrainSettings, rows: int, mean_tokens: float, *, flops: float = CPU_FLOPS
) -> Estimate:
    """A rough memory and time estimate of a run: the weights (4 bytes a parameter; half a byte quantized) plus
    the optimizer state of the adapter and the activations of one micro-batch, and the steps' compute at ``flops``
    (calibrated on a small CPU: give a GPU's rate for a GPU). Good to a factor of two or so: enough to say "minutes"
    or "hours" and "fits" or "does not", not to plan to the second."""
    tokens = min(mean_tokens, settings.max_length)
    weight_bytes = parameters * (0.5 if settings.quantize else 4)
    # LoRA's trainable share grows with the rank; fp32 weights, gradients and two Adam moments
    adapter = parameters * min(0.5, settings.rank / 1024) * 16
    hidden = max(64.0, math.sqrt(parameters / 12))  # a decoder's width, roughly, from its size
    activations = settings.batch_size * tokens * hidden * 4 * 34  # bytes a token a layer-ish, checkpointed
    memory = (weight_bytes + adapter + activations) * 1.2 + 300 * 2**20  # framework overhead
    steps = total_steps(settings, rows)
    per_step = STEP_OVERHEAD_S + 8 * parameters * settings.batch_size * settings.grad_accum * tokens / flops
    return Estimate(memory_mib=math.ceil(memory / 2**20), seconds=round(steps * per_step, 1))


def total_steps(settings: TrainSettings, rows: int) -> int:
    """The optimizer steps a run takes: ``max_steps`` when given, else the epochs over ``rows``."""
    if settings.max_steps:
        return settings.max_steps
    per_epoch = max(1, math.ceil(rows / (settings.batch_size * settings.grad_accum)))
    return max(1, math.ceil(per_epoch * settings.epochs))


# -------------------------------------------------------------------------------------------- while it runs


@dataclass
class LossWatch:
    """Tells a run that diverged from one that is merely noisy: a loss that is NaN or infinite, or ``patience``
    reports in a row far above the best so far (more than ``factor`` times it and ``margin`` above it).
    ``last_good`` is the step of the newest report that was not bad: checkpoints after it are not kept."""

    patience: int = 3
    factor: float = 2.0
    margin: float = 1.0
    best: float = math.inf
    bad: int = 0
    last_good: int = 0

    def observe(self, step: int, loss: float) -> str | None:
        """Why the run diverged at this report, or None while it has not."""
        if not math.isfinite(loss):
            return f"the loss became {loss} at step {step}"
        if loss > self.best * self.factor and loss > self.best + self.margin:
            self.bad += 1
            if self.bad >= self.patience:
                return (
                    f"the loss ran away: {loss:.3g} at step {step} against a best of {self.best:.3g}, "
                    f"{self.bad} reports in a row"
                )
            return None
        self.bad = 0
        self.best = min(self.best, loss)
        self.last_good = step
        return None
