"""Adapters that run lvg inside existing engines, each behind its own extra.

- :mod:`lvg.integrations.ray`: batch inference on Ray Data (``pip install 'latent-vg[ray]'``).

Importing this package imports none of the engines.
"""
