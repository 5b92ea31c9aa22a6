"""The workbench's pipeline steps as library functions: each reads folders on disk and writes an
``AnalysisFolder`` (dashboards, geometry, evaluation, matching, circuits). The CLI, the demo, the
benchmarks and notebooks call these."""

from interp.pipeline.circuits import analyze_circuits, ioi_circuit_analysis
from interp.pipeline.demo import demo_analyses, demo_circuits
from interp.pipeline.sae import (
           analyze_compare,
           analyze_eval,
           analyze_features,
           analyze_geometry,
           run_cache,
           sae_members,
)

__all__ = ["analyze_circuits", "analyze_compare", "analyze_eval", "analyze_features", "analyze_geometry",
           "demo_analyses", "demo_circuits", "ioi_circuit_analysis", "run_cache", "sae_members"]
