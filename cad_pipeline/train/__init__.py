"""Model loading, LoRA fine-tuning, training plans."""
