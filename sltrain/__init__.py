"""sltrain: training, evaluation, export and inference for the sign-language pipeline."""

__version__ = "0.1.0"
