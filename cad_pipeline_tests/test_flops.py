"""Model FLOPs (the analytic count against torch's own count of a training step), device peaks, and the training benchmarks
that print them."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cad_pipeline.train.data import padded_batch, prepare_samples
from cad_pipeline.train.flops import flop_model, peak_flops
from cad_pipeline.train.loop import answer_loss
from cad_pipeline.train.model import make_trainable
from cad_pipeline_tests.test_training import CPU, SHORT, _loaded, tiny_setup  # noqa: F401 (the fixture)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_the_flop_model_counts_what_a_training_step_computes(tiny_setup, mode):  # noqa: F811
    """One sample (no padding), forward and backward as the loop runs them: the analytic count is torch's count. The
    attention runs on SDPA's math path, whose matmuls torch counts (its fused CPU kernel has no FLOP formula)."""
    folder, records, model_dir = tiny_setup
    config, base = _loaded(model_dir, train_mode=mode)
    model = make_trainable(base.model, config)
    [sample] = prepare_samples(records[:1], folder / "images", base.processor, 4096).samples
    counted = flop_model(model, base.processor, sample, CPU, torch.float32)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss, _ = answer_loss(model, padded_batch([sample], base.processor))
        loss.backward()
    assert counted.sample_flops(sample) == pytest.approx(counter.get_total_flops(), rel=0.02)
    assert counted.weight_flops_per_token > 0 and counted.image_flops > 0 and counted.attention_flops_per_token_position > 0


def test_lora_skips_the_frozen_weights_gradients_and_full_training_pays_them(tiny_setup):  # noqa: F811
    folder, records, model_dir = tiny_setup
    per_token, adapters = {}, 0
    for mode in ("lora", "full"):
        config, base = _loaded(model_dir, train_mode=mode)
        model = make_trainable(base.model, config)
        [sample] = prepare_samples(records[:1], folder / "images", base.processor, 4096).samples
        per_token[mode] = flop_model(model, base.processor, sample, CPU, torch.float32).weight_flops_per_token
        adapters += sum(p.numel() for name, p in model.named_parameters() if "lora_" in name and "vision_tower" not in name)
    assert per_token["lora"] == 4 * per_token["full"] / 6 + 6 * adapters


def test_device_peaks_come_from_the_table_for_16_bit_and_from_the_user_otherwise(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert peak_flops(cuda, torch.bfloat16) == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert peak_flops(cuda, torch.bfloat16) == pytest.approx(989.4e12)
    assert peak_flops(cuda, torch.float32) is None and peak_flops(CPU, torch.float32) is None
    assert peak_flops(CPU, torch.float32, override_tflops=2.5) == 2.5e12


def test_bench_train_json_gives_both_loops_speed_flops_and_their_ratio(tiny_setup, tmp_path, capsys):  # noqa: F811
    """Only the JSON object on stdout (the Trainer's own summary print is off); its figures agree with each other."""
    from cad_pipeline.cli import main

    folder, records, _ = tiny_setup
    (folder / "train.json").write_text(json.dumps(records))
    arguments = ["bench", "train", "--partition", str(folder), "--samples", "8", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--json"]
    assert main([*arguments, "--peak-tflops", "0.5"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["device"] == "cpu" and figures["packed"] is False and figures["peak_flops"] == 0.5e12
    assert figures["ratio"] == pytest.approx(figures["ours"]["real_tokens_per_second"] / figures["trainer"]["real_tokens_per_second"])
    for loop in ("ours", "trainer"):
        speed = figures[loop]
        assert speed["model_flops_per_second"] == pytest.approx(speed["real_tokens_per_second"] * figures["flops_per_real_token"])
        assert speed["mfu"] == pytest.approx(speed["model_flops_per_second"] / 0.5e12) and 0 <= speed["data_wait_share"] < 1
    assert figures["trainer"]["pad_fraction"] > 0 and figures["flops_per_real_token"] > 0
    assert figures["trainer"]["peak_memory_bytes"] > 2**20 and figures["ours"]["peak_memory_bytes"] > 2**20
    assert figures["planned_peak_bytes"] > figures["ours"]["peak_memory_bytes"] / 2, "the planner's peak for our loop, beside the measured one"


def test_bench_plan_json_gives_the_projected_and_measured_epoch_and_peak_memory(tiny_setup, capsys):  # noqa: F811
    from cad_pipeline.cli import main

    folder, records, model_dir = tiny_setup
    (folder / "train.json").write_text(json.dumps(records))
    (folder / "val.json").write_text(json.dumps(records[:4]))
    arguments = ["--partition", str(folder), "--base-model", str(model_dir), "--samples", "6", "--plan-steps", "2", "--plan-warmup", "1", "--batch-size", "2", "--json"]
    assert main(["bench", "plan", *arguments]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["samples"] == 6 and figures["steps_per_epoch"] == 3 and figures["base_model"] == str(model_dir)
    assert figures["ratio"] == pytest.approx(figures["projected_epoch_seconds"] / figures["measured_epoch_seconds"])
    assert figures["predicted_peak_bytes"] > 0 and figures["measured_peak_bytes"] > 2**20


def test_bench_memory_json_sets_the_plan_beside_measured_steps_at_every_batch_length_and_checkpointing(tiny_setup, capsys):  # noqa: F811
    from cad_pipeline.cli import main

    folder, records, model_dir = tiny_setup
    (folder / "train.json").write_text(json.dumps(records))
    (folder / "val.json").write_text(json.dumps(records[:4]))
    arguments = ["--partition", str(folder), "--base-model", str(model_dir), "--batch-sizes", "1,2", "--max-length", str(SHORT), "--json"]
    assert main(["bench", "memory", *arguments]) == 0
    figures = json.loads(capsys.readouterr().out)
    rows = {(row["batch_size"], row["gradient_checkpointing"], row["padded_length"]): row for row in figures["checks"]}
    assert len(rows) == 8 and {(batch, on) for batch, on, _ in rows} == {(1, True), (1, False), (2, True), (2, False)}
    assert max(length for *_, length in rows) <= SHORT
    for (batch, on, length), row in rows.items():
        assert row["ratio"] == pytest.approx(row["predicted_peak_bytes"] / row["measured_peak_bytes"]) and row["measured_peak_bytes"] > 2**20
        if on:  # checkpointing keeps less, and the plan says so
            assert row["predicted_peak_bytes"] < rows[(batch, False, length)]["predicted_peak_bytes"]
    longest = max(length for *_, length in rows)
    assert rows[(2, False, longest)]["predicted_peak_bytes"] > rows[(1, False, longest)]["predicted_peak_bytes"]
    assert figures["lowest_ratio"] == min(row["ratio"] for row in rows.values()) and figures["calibration"] > 0
