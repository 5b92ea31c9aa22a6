"""Models and text data: loading models (``loading``), token windows (``data``), the demo model (``demo``)."""

from interp.models.loading import load_model

__all__ = ["load_model"]
