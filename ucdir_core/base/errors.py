"""The project's error types: each carries one line meant for the user (the command line prints it
and exits with status 2)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data; the message is one line meant for the user."""


class RunError(DataError):
    """A run folder or checkpoint that cannot be used as asked; the message is one line naming the file."""


class DivergenceError(RunError):
    """Training produced a non-finite loss, gradient or embedding; the message names the epoch, the
    step, the term and what to try."""
