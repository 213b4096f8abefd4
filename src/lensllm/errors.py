"""Errors raised at lensllm's boundaries.

Every problem with what a user gave us (a curve file, a config, a command-line
option) is an :class:`InputError` whose message says what was wrong and what to
do.  The command line prints that message on one line and exits non-zero; it
never shows a traceback for bad input.
"""

from __future__ import annotations

from pathlib import Path


class LensLLMError(Exception):
    """Base class of every error lensllm raises on purpose."""


class InputError(LensLLMError, ValueError):
    """Bad input: a malformed file, an impossible setting, a missing value."""


class RankingWarning(UserWarning):
    """A ranking that is weaker than its numbers suggest (one candidate, a tie, losses
    rising with data, a metric that is undefined)."""


class FitError(LensLLMError, RuntimeError):
    """A curve could not be fitted at all (no finite objective anywhere)."""


def read_user_text(path: str | Path, kind: str = "file", expected: str = "a file") -> str:
    """Read a file a user named, as UTF-8; every failure is one clear InputError.

    ``kind`` names the file in "no such <kind>"; ``expected`` says what a directory
    given instead should have been ("a curve file").
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected {expected}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {kind} ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: not UTF-8 text (invalid byte at offset {exc.start}); "
                         "save it as UTF-8") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters, for an error
    message of our own (``"..."`` marks a cut; the type name stands in for no text)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
