"""Fine-tuning: model assembly, LoRA, data, training, streaming, calibration."""
