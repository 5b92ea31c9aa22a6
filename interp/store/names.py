"""Folder ids (run ids, cache ids) are names, never paths: one validator for the CLI, the API and the app."""

from __future__ import annotations

import re

from interp.store.errors import InputError

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
MAX_LENGTH = 200


class FolderNameError(InputError):
    """A run or cache id that is not a plain folder name."""


def check_name(name: str, what: str = "run id") -> str:
    """``name`` unchanged if it is one folder name (letters, digits, ``-_.``, no leading dot); else an InputError.

    This refuses ``.``, ``..``, ``../x``, absolute paths and hidden names, so an id can never write outside
    the folder it is meant to live in.
    """
    text = str(name)
    if not NAME.fullmatch(text) or len(text) > MAX_LENGTH:
        raise FolderNameError(f"{what} {text!r} is not a folder name: use letters, digits, '-', '_' and '.' "
                         f"(not first), at most {MAX_LENGTH} characters, e.g. 'my-run_1'")
    return text


SAELENS_PREFIX = "saelens:"  # an SAE of a SAELens release: saelens:<release>/<sae_id>


def is_release_spec(spec) -> bool:
    """Whether an SAE argument names a SAELens release SAE rather than a folder."""
    return str(spec).startswith(SAELENS_PREFIX)


def release_analysis_id(spec) -> str:
    """``saelens/<release>--<sae_id>``: the two-part analysis id of a release SAE (slashes become ``--``)."""
    return "saelens/" + str(spec)[len(SAELENS_PREFIX):].strip("/").replace("/", "--")
