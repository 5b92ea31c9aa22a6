"""Turn the workbench's own error types into a one-line message and exit code 2, not a traceback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from interp.cache.format import CacheError
from interp.errors import InputError

# bad input (every spec/config/path error derives from InputError), a broken cache, a missing file;
# any other exception is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, CacheError, FileNotFoundError, FileExistsError)


@contextlib.contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Report expected failures (bad specs, broken caches, bad configs) as ``error: ...``."""
    try:
        yield
    except USER_ERRORS + extra as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from error


def split_csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
