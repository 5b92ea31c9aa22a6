"""Pretrained SAEs from SAELens releases, offline: ``saelens:<release>/<sae_id>`` from the local HF cache.

The spec resolves through SAELens' own ``SAE.from_pretrained`` (its release directory, its converters),
with the hub held offline so nothing is downloaded; an SAE not in the cache gets a message saying how
to fetch it on a machine with network. ``<release>`` is a release name of SAELens' directory or a
Hugging Face repo id ``owner/name`` (then ``<sae_id>`` is the folder inside the repo).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from interp.store.errors import DictionaryError
from interp.store.names import SAELENS_PREFIX, is_release_spec

__all__ = ["SAELENS_PREFIX", "is_release_spec", "load_release", "split_release_spec"]


def _directory() -> dict:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def split_release_spec(spec: str) -> tuple[str, str]:
    """``saelens:<release>/<sae_id>`` -> ``(release, sae_id)``; a one-line error naming the valid ids otherwise."""
    body = str(spec)[len(SAELENS_PREFIX):]
    directory = _directory()
    first, _, rest = body.partition("/")
    if first in directory:
        release, sae_id = first, rest
    elif body.count("/") >= 2:  # a Hugging Face repo id owner/name, then the folder inside it
        owner, name, sae_id = body.split("/", 2)
        release = f"{owner}/{name}"
    else:
        raise DictionaryError(f"'{first}' is not a SAELens release (see sae_lens' pretrained_saes.yaml) nor a "
                              f"Hugging Face repo id owner/name; pass {SAELENS_PREFIX}<release>/<sae_id>")
    ids = list(directory[release].saes_map) if release in directory else None
    if not sae_id or (ids is not None and sae_id not in ids):
        shown = ", ".join(ids[:5]) + (", ..." if ids and len(ids) > 5 else "") if ids else "a folder of the repo"
        raise DictionaryError(f"{spec}: no SAE id '{sae_id}' in release '{release}'; its ids: {shown}")
    return release, sae_id


def _repo_and_folder(release: str, sae_id: str) -> tuple[str, str]:
    lookup = _directory().get(release)
    return (lookup.repo_id, lookup.saes_map[sae_id]) if lookup is not None else (release, sae_id)


def cached_snapshot(release: str, sae_id: str) -> Path | None:
    """The cached snapshot folder holding the release's SAE (``models--<owner>--<name>/snapshots/<rev>/``), or None."""
    from huggingface_hub import constants

    repo_id, folder = _repo_and_folder(release, sae_id)
    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted(s for s in snapshots.glob("*") if (s / folder).exists()) if snapshots.is_dir() else []
    return found[0] if found else None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hold the Hugging Face hub offline (the constant behind ``HF_HUB_OFFLINE``): cache hits only, no request."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_release(spec: str, device: str = "cpu"):
    """The SAELens ``SAE`` of a release spec, loaded by ``SAE.from_pretrained`` from the local cache only."""
    from huggingface_hub import constants
    from sae_lens import SAE

    release, sae_id = split_release_spec(spec)
    repo_id, folder = _repo_and_folder(release, sae_id)
    fetch = (f"on a machine with network run: python -c \"from sae_lens import SAE; "
             f"SAE.from_pretrained('{release}', '{sae_id}')\", then copy its Hugging Face cache (HF_HOME) here")
    if cached_snapshot(release, sae_id) is None:
        raise DictionaryError(f"{spec} (repo {repo_id}, folder {folder}) is not in the local Hugging Face cache "
                              f"{constants.HF_HUB_CACHE}; {fetch}")
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        with hub_offline():
            return SAE.from_pretrained(release, sae_id, device=device)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError) as error:
        raise DictionaryError(f"{spec}: the cache holds only part of it ({type(error).__name__}); {fetch}") from error
