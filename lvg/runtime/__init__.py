"""The torch-free inference runtime: :class:`~lvg.runtime.grounder.Grounder`, the backends, results and drawing.

It builds on :mod:`lvg.core` (model files, tokenizer, pre- and post-processing). Nothing in this package
imports torch at module level; the torch backend is loaded lazily when a checkpoint is opened.
"""
