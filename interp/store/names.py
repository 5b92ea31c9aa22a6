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


DEMO_MODEL_NAME = "workbench-demo-2l"  # the embedded demo model's cfg.model_name (``--model demo``)

# the demo workspace's runs (``workbench demo``): names only, so the CLI can print them without loading a stage
DEMO_RUNS = ("demo-mfr", "demo-plain")
DEMO_SAE_HOOK = "blocks.1.hook_resid_post"  # the demo SAEs read layer 1's residual stream
# the feature circuits' sites: each layer's attention and MLP outputs, as Marks et al. (the circuits run there:
# previous-token head L0H0 -> induction head L1H2; the IOI name signal through layer 0 into the name mover L1H1)
DEMO_CIRCUIT_SITES = (
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_out",
    "blocks.1.hook_attn_out",
    "blocks.1.hook_mlp_out",
)


def site_run_id(hook: str) -> str:
    """The demo's run of one site SAE: ``blocks.0.hook_attn_out`` -> ``demo-site-L0-attn_out``."""
    layer, _, name = hook.removeprefix("blocks.").partition(".hook_")
    return f"demo-site-L{layer}-{name}"


# the evaluation suite's metrics, in the order ``workbench eval`` runs them (each one eval/<metric>.json)
EVAL_METRICS = ("core", "sparse_probing", "absorption", "principled", "stability", "explanations")
