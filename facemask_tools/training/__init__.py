"""PyTorch side of facemask-sdk: model factory, data pipeline, training loop, evaluation."""

import warnings

# effdet and timm decorate functions with torch.jit.script, which torch >= 2.10 flags as deprecated on
# import; the warning is not the user's to act on and would break the one-`error:`-line promise.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
