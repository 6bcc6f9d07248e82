"""polytask: multi-task learning on PyTorch and Hugging Face transformers."""

__version__ = "0.1.0"
