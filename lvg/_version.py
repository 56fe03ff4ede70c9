"""The package version (one definition: ``lvg.__version__``, ``lvg --version`` and exported metadata read it)."""

__version__ = "0.1.0"
