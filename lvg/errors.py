"""Typed exceptions. Every error a user can cause is an ``LVGError`` with a one-line message.

The CLI prints ``error: <message>`` and exits non-zero for these; anything else is a bug.
"""

from __future__ import annotations


class LVGError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code = 2


class ConfigError(LVGError):
    """A config or variant name is invalid."""


class ArtifactError(LVGError):
    """A model file is missing, corrupt or not a Latent-VG model."""


class CheckpointError(ArtifactError):
    """A checkpoint or pretrained-weights file is missing, corrupt or of another model.

    A checkpoint is a model file, so code that refuses any bad model file catches this as an
    :class:`ArtifactError`.
    """


class TokenizerError(ArtifactError, ConfigError):
    """A tokenizer that does not fit the model it is to read text for (more ids than the model embeds, or
    not the one it was trained with).

    Both a problem of the model file (``ArtifactError``, as the runtime reports it) and of a run's settings
    (``ConfigError``, as training reports it), so either ``except`` clause catches it.
    """


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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (at most ``limit`` characters), or its type name:
    what a one-line error quotes of a third-party exception."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
