"""Training and evaluation: the fit loop, metrics, test-time augmentation, cross-validation, adaptation, explanations, plots."""
