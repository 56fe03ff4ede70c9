"""Torch-free inference runtime: preprocessing, tokenizer, backends, post-processing, results, drawing.

Nothing in this package imports torch at module level; the torch backend is loaded lazily when a
checkpoint is opened.
"""
