"""Attribution graphs over a transcoder replacement model (Ameisen et al. 2025; circuit-tracer): the graph of
one prompt (``attribute``), its pruning and scores (``prune``), checks by intervention (``verify``) and the
export to circuit-tracer's graph JSON (``export``)."""

from interp.circuits.attribution.attribute import attribute, salient_logits
from interp.circuits.attribution.graph import AttributionGraph

__all__ = ["AttributionGraph", "attribute", "salient_logits"]
