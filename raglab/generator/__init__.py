"""The generator: SFT records, LoRA training with trl, chain-of-thought distillation, maths answers, the teacher."""
