"""The user-error base of the torch bridge (no imports, so any module can use it).

Errors deriving from :class:`UserError` are mistakes in the user's input (unreadable or
unsuitable audio, a checkpoint whose sha256 is not the expected one); the `jaxprobe` CLI
reports them as one line and exit code 2 instead of a traceback. ``jaxprobe.errors`` holds
the JAX side's types; torch_bridge does not import jaxprobe.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message says what was expected and how to fix it."""
