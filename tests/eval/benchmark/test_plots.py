"""Figure helpers: the order models appear in (shared by the tables and the charts)."""

from __future__ import annotations

from eval.benchmark.plots import row_order


def test_rows_run_baselines_then_each_backbone_probes_before_fine_tuning() -> None:
    rows = {
        name: {"backbone": backbone, "mode": mode}
        for name, backbone, mode in (
            ("passt_s.tiny full fine-tune", "passt_s.tiny", "full"),
            ("cnn14.tiny full fine-tune", "cnn14.tiny", "full"),
            ("cnn14.tiny LoRA fine-tune", "cnn14.tiny", "lora"),
            ("cnn14.tiny MLP probe", "cnn14.tiny", "mlp_probe"),
            ("cnn14.tiny linear probe", "cnn14.tiny", "linear_probe"),
            ("baseline: training mean", "baseline", "majority"),
            ("baseline: MIDI statistics, ridge", "baseline", "midi"),
        )
    }
    assert row_order(rows) == [
        "baseline: MIDI statistics, ridge",
        "baseline: training mean",
        "cnn14.tiny linear probe",
        "cnn14.tiny MLP probe",
        "cnn14.tiny LoRA fine-tune",
        "cnn14.tiny full fine-tune",
        "passt_s.tiny full fine-tune",
    ]
