"""Data: formats, validation, tokenisation, collators."""
