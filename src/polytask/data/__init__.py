"""Data: bundled datasets, loading and tokenising, batching, task samplers."""
