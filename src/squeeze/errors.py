"""User-facing error type: one clear line (what is wrong, what to do), non-zero exit in the CLI."""
from __future__ import annotations


class SqueezeError(Exception):
    """An error caused by user input (bad name, bad file, bad data), reported as a single line.

    The CLI catches it, prints ``error: <message>`` and exits with status 2; tracebacks are
    reserved for bugs in squeeze itself.
    """


def check(condition: bool, message: str) -> None:
    """Raise :class:`SqueezeError` with ``message`` when ``condition`` is false."""
    if not condition:
        raise SqueezeError(message)
