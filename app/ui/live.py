"""What the Probe page runs live: the model and SAEs loaded once per server (``st.cache_resource``), probes and
generations cached per input, each SAE found through its analysis folder and checked to lie in the workspace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.ui import data
from app.ui.workspace import contained, inside, model_spec
from interp.store.analysis_folder import AnalysisFolder, analysis_id
from interp.store.cache_manifest import read_manifest
from interp.store.errors import InputError
from interp.store.run_folder import SAE_CONFIG, RunFolder


@dataclass(frozen=True)
class Site:
    """An analysed SAE and what running it needs: its folder, hook, model spec and its run's members."""

    sae: Path
    hook: str
    spec: str
    members: tuple[Path, ...]  # every member of the SAE's run (itself included), for ensemble side by side


def site_of(root: Path, folder: Path) -> Site:
    """The SAE behind an analysis folder (``meta.json``), its model spec from its run's cache; every path read
    must resolve inside the workspace and the model must be one the app may load."""
    analysis = AnalysisFolder(folder)
    meta = data.read_json(analysis.meta_path) if analysis.meta_path.exists() else {}
    if not meta.get("sae") or not meta.get("hook"):
        raise InputError(f"{analysis.meta_path.name} of {analysis.id} names no SAE folder or hook; rebuild the "
                         "dashboards with `workbench analyze features runs/<run_id>`")
    sae = inside(root, meta["sae"])
    if not RunFolder.is_sae(sae):
        raise InputError(f"the SAE folder {meta['sae']} of {analysis.id} is missing; train it or rebuild the "
                         "dashboards")
    cache = inside(root, RunFolder(sae.parent).cache(for_what=str(sae)))
    spec = model_spec(root, read_manifest(cache).model)  # the manifest alone: opening the page imports no torch
    members = tuple(m for m in RunFolder(sae.parent).members() if contained(root, m))
    return Site(sae, str(meta["hook"]), spec, members)


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def model_for(spec: str):
    from interp.models.loading import load_model

    return load_model(spec, device="cpu")


@st.cache_resource(show_spinner="Loading the SAE…", max_entries=8)
def dictionary_for(path: str, stamp: float):
    from interp.features.dictionary import load_dictionary

    return load_dictionary(path, device="cpu")


def _dictionary(path: Path):
    return dictionary_for(str(path), path.joinpath(SAE_CONFIG).stat().st_mtime_ns if path.exists() else 0.0)


@st.cache_data(show_spinner="Probing…", max_entries=32)
def probed(root: str, folder: str, text: str):
    """Probe ``text`` with every member of the SAE's run; labels from each member's dashboards."""
    from interp.features.probe import probe, stored_labels

    site = site_of(Path(root), Path(folder))
    dictionaries = {analysis_id(m): _dictionary(m) for m in site.members}
    analyses = Path(root) / "analyses"
    labels = {name: stored_labels(analyses / name, d.d_sae) for name, d in dictionaries.items()}
    hooks = {name: site.hook for name in dictionaries}
    return probe(model_for(site.spec), dictionaries, text, hooks=hooks, labels=labels), analysis_id(site.sae)


@st.cache_data(show_spinner="Generating…", max_entries=32)
def steered(root: str, folder: str, feature: int, method: str, value: float, prompt: str, n_tokens: int,
            temperature: float, seed: int, sweep: tuple[float, ...]):
    """Default vs edited continuation and a dose-response sweep over ``sweep``."""
    from interp.features.interventions import Intervention, dose_response, generate

    site = site_of(Path(root), Path(folder))
    model, dictionary = model_for(site.spec), _dictionary(site.sae)
    edit = Intervention(dictionary, site.hook, int(feature), method, 0.0 if method == "ablate" else value)
    out = generate(model, prompt, [edit], max_new_tokens=n_tokens, temperature=temperature, seed=seed)
    curve = dose_response(model, prompt, edit, list(sweep)) if method != "ablate" else None
    tokens = [model.tokenizer.decode([t]) for t in out.prompt_ids + out.default_ids]
    return out, curve, tokens
