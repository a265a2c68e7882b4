"""lmdistill: distil Hugging Face causal language models into smaller students."""
__version__ = "0.1.0"
