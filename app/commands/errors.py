"""Turn the workbench's own error types into a one-line message and exit code 2, not a traceback."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from interp.store.errors import CacheError, InputError
from interp.store.locks import FolderBusyError

# bad input (every spec/config/path error derives from InputError), a broken cache, a missing file;
# any other exception is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, CacheError, FileNotFoundError, FileExistsError,
                                                NotADirectoryError, PermissionError)


@contextlib.contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Report expected failures (bad specs, broken caches, bad configs) as ``error: ...``."""
    try:
        yield
    except USER_ERRORS + extra as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from error


@contextlib.contextmanager
def removed_on_failure(folder: Path, keep: Callable[[Path], bool]) -> Iterator[None]:
    """Remove ``folder`` if the body creates it and then fails before ``keep(folder)`` holds (before it
    wrote anything worth resuming), so failed commands leave no half-made folders behind."""
    created = not folder.exists()
    try:
        yield
    except FolderBusyError:
        raise  # another process writes that folder: it is not ours to remove
    except BaseException:
        if created and folder.is_dir() and not keep(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def split_csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())
