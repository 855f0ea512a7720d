"""The transformer and its training: the model, the sampling engine, checkpoints, training, bits/char."""
