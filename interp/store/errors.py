"""The workbench's one base class for bad input: what the CLI reports as a single ``error:`` line.

Every error a user can cause and fix (a bad spec, option, path or config) derives from
``InputError``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CacheError(RuntimeError):
    """A cache that is missing, incomplete, corrupted or inconsistent; the message names the file."""


class InputError(ValueError):
    """A bad value given by the user (option, spec, path, config); the message says what to do."""


class DictionaryError(InputError):
    """A dictionary that does not fit the activations it is applied to (or a feature it does not have)."""
