"""The user-error types of jaxprobe: what the CLI reports as one line and exit code 2.

A :class:`UserError` is a mistake in what the user asked for or gave us (a bad config
value, a file that is not audio, an output folder that cannot be written), as opposed to a
bug in jaxprobe. Library validators keep raising ``ValueError`` / ``TypeError`` (the
scikit-learn convention for API misuse); the study runners and the CLI check the user's
inputs up front and raise these typed errors, so the CLI can tell the two apart:
a UserError becomes ``jaxprobe CMD: error: MESSAGE`` on stderr and exit code 2, anything
else a traceback plus a request to report it.

``torch_bridge.errors.UserError`` is the torch side's base (unreadable audio, a checkpoint
with the wrong sha256); the CLI treats both alike. This module imports nothing.
"""
from __future__ import annotations

__all__ = ["ConfigError", "DataError", "OutputPathError", "UserError"]


class UserError(Exception):
    """A mistake in the user's input; the message says what was expected and how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, of the wrong kind or out of range."""


class DataError(UserError, ValueError):
    """Input data that cannot serve the request (no audio found, unknown noise names, too short)."""


class OutputPathError(UserError, OSError):
    """An output path that cannot be created or written."""
