"""The SAE evaluation suite: SAEBench's metrics (``core``, ``sparse_probing``, ``absorption``), the seed paper's
principled evaluation (``principled``) and seed stability (``stability``), each a set of pure functions over
a model, activations and ``Dictionary`` objects; ``schema`` lays each result out as SAEBench's eval output.
``interp.pipeline.evals`` runs them over SAE folders and writes the files."""
