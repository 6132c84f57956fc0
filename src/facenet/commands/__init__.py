"""Thin argv adapters, one module per ``facenet`` command (see ``facenet.cli``)."""
