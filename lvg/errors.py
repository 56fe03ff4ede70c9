"""Typed exceptions. Every error a user can cause is an ``LVGError`` with a one-line message.

The CLI prints ``error: <message>`` and exits non-zero for these; anything else is a bug.
"""

from __future__ import annotations


class LVGError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code = 2


class ConfigError(LVGError):
    """A config or variant name is invalid."""


class CheckpointError(LVGError):
    """A checkpoint or pretrained-weights file is missing, corrupt or of another model."""


class ArtifactError(LVGError):
    """An exported model file is missing, corrupt or not a Latent-VG artifact."""


class InputError(LVGError):
    """An image or text input cannot be used."""


class MissingDependencyError(LVGError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(f"{purpose} needs '{package}', which is not installed: pip install 'latent-vg[{extra}]'")


def require(module: str, *, extra: str, purpose: str, package: str | None = None):
    """Import an optional module or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package or module, extra, purpose) from None
