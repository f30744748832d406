"""Foundations every other part uses: on-disk formats, stage reports, errors, prompts, seeded sampling, the machine."""
