"""PyTorch side of facemask-sdk: model factory, data pipeline, training loop, evaluation."""
