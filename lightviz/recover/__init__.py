"""Winning accuracy back: quantization-aware fine-tuning with a straight-through estimator
(`finetune`), knowledge distillation into a smaller architecture (`distill`), and the training
loop both share (`training`).

May import: `lightviz.core` and `lightviz.io`; never analysis, plots, cli or ui.
"""
