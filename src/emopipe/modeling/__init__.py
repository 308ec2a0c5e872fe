"""Models and what builds, trains and stores them: the model, loss and schedule registries, pretrained weights, checkpoints."""
