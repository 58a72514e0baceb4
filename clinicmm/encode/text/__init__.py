"""Note encoding: the transformers encoder, section selection, LoRA fine-tuning."""
