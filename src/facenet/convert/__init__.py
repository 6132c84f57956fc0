"""Converters from published face-embedding weights into our models (no TensorFlow needed)."""
