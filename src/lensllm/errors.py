"""Errors raised at lensllm's boundaries.

Every problem with what a user gave us (a curve file, a config, a command-line
option) is an :class:`InputError` whose message says what was wrong and what to
do.  The command line prints that message on one line and exits non-zero; it
never shows a traceback for bad input.
"""

from __future__ import annotations


class LensLLMError(Exception):
    """Base class of every error lensllm raises on purpose."""


class InputError(LensLLMError, ValueError):
    """Bad input: a malformed file, an impossible setting, a missing value."""


class FitError(LensLLMError, RuntimeError):
    """A curve could not be fitted at all (no finite objective anywhere)."""
