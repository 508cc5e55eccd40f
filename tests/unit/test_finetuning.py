"""The pure parts of fine-tuning a run leans on: LoRA's targets from a model's linear layers, the estimate shown
before a launch, the step count, and telling a diverged run from a noisy one."""

import math

from studio.finetuning import LossWatch, TrainSettings, estimate, target_candidates, total_steps

LLAMA_LINEARS = [
    f"model.layers.{i}.{part}"
    for i in range(2)
    for part in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
] + ["lm_head"]


def test_targets_are_the_distinct_leaf_names_without_the_output_head() -> None:
    assert target_candidates(LLAMA_LINEARS) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert target_candidates(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]) == ["c_attn"]
    assert target_candidates([]) == []


def test_steps_come_from_max_steps_or_the_epochs_over_the_rows() -> None:
    assert total_steps(TrainSettings(max_steps=7), rows=10_000) == 7
    assert total_steps(TrainSettings(batch_size=4, grad_accum=2, epochs=3), rows=100) == 39  # 13 a epoch
    assert total_steps(TrainSettings(batch_size=8, grad_accum=1, epochs=0.5), rows=3) == 1


def test_estimates_grow_with_the_model_and_the_data_and_quantizing_saves_memory() -> None:
    small = estimate(500_000_000, TrainSettings(), rows=1000, mean_tokens=300)
    large = estimate(7_000_000_000, TrainSettings(), rows=1000, mean_tokens=300)
    assert small.memory_mib < large.memory_mib
    assert small.seconds < large.seconds
    assert 7_000_000_000 * 4 / 2**20 < large.memory_mib < 7_000_000_000 * 4 * 2 / 2**20  # weights, then a bit more
    quantized = estimate(7_000_000_000, TrainSettings(quantize=True), rows=1000, mean_tokens=300)
    assert quantized.memory_mib < large.memory_mib / 3
    more = estimate(500_000_000, TrainSettings(), rows=4000, mean_tokens=300)
    assert more.seconds > 3 * small.seconds


def test_the_demo_run_is_estimated_in_seconds() -> None:
    """Calibration: the tiny demo model (~400k parameters), 100 steps of 8 rows, trains in ~10 s here."""
    settings = TrainSettings(max_steps=100, batch_size=8, grad_accum=1, max_length=128)
    guess = estimate(393_856, settings, rows=16, mean_tokens=30)
    assert 3 < guess.seconds < 30
    assert guess.memory_mib < 1024


def test_a_nan_loss_is_divergence_at_once() -> None:
    watch = LossWatch()
    assert watch.observe(5, 2.0) is None
    reason = watch.observe(10, math.nan)
    assert reason is not None
    assert "nan" in reason
    assert "step 10" in reason
    assert watch.last_good == 5


def test_a_loss_far_above_the_best_three_reports_running_is_divergence() -> None:
    watch = LossWatch()
    for step, loss in [(5, 3.0), (10, 2.0), (15, 1.5)]:
        assert watch.observe(step, loss) is None
    assert watch.observe(20, 9.0) is None
    assert watch.observe(25, 12.0) is None
    reason = watch.observe(30, 40.0)
    assert reason is not None
    assert "ran away" in reason
    assert "1.5" in reason
    assert watch.last_good == 15


def test_noise_and_one_spike_are_not_divergence() -> None:
    watch = LossWatch()
    for step, loss in enumerate([3.0, 2.5, 2.7, 2.4, 9.0, 2.3, 2.6, 9.0, 9.0, 2.2], start=1):
        assert watch.observe(step, loss) is None
    # small losses rise by more than twice without being far above: the margin keeps them
    low = LossWatch()
    for step, loss in enumerate([0.1, 0.05, 0.3, 0.4, 0.5], start=1):
        assert low.observe(step, loss) is None


def test_a_report_says_what_it_has_in_words_leaving_out_what_it_lacks() -> None:
    from studio.finetuning import Progress

    full = Progress(step=30, total_steps=60, epoch=1.5, loss=0.5, eval_loss=0.75, learning_rate=2e-4,
                    tokens_per_s=1234.4, eta_s=42.4, checkpoint=20)  # fmt: skip

    assert full.words() == [
        "step 30/60", "epoch 1.50", "loss 0.5000", "eval loss 0.7500", "lr 2.00e-04", "1234 tokens/s", "ETA 42 s",
        "checkpoint 20",
    ]  # fmt: skip
    assert Progress(step=3, phase="loading").words() == []
