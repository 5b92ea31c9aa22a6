"""``NeuronpediaExport``: the owner of a Neuronpedia export folder, the only module that spells its file names.

The layout is the one Neuronpedia's bulk import reads (its webapp's admin import route), as written by
neuronpedia-utils' ``convert-saedashboard-to-neuronpedia-export.py`` and SAEDashboard's
``neuronpedia_export``::

    <root>/<modelId>/<sourceId>/
        release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl   one row each
        features/batch-<n>.jsonl.gz            one Neuron row per feature
        activations/batch-<n>.jsonl.gz         one Activation row per example (the feature's batch)
        explanations/batch-<n>.jsonl.gz        one Explanation row per explanation
        explanation_scores/batch-<n>.jsonl.gz  one ExplanationScore row per score (ours: the import route
                                               does not read it; the rows have the database table's shape)

Rows are built by ``interp.features.neuronpedia``; this module only writes and reads them. Every file is
written atomically; gzip with a zero timestamp, so the same rows give the same bytes.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from interp.store.io import FileReadError, write_bytes
from interp.store.names import check_name

# the bulk-import creator id SAEDashboard and neuronpedia-utils use when none is given
FALLBACK_CREATOR_ID = "clkht01d40000jv08hvalcvly"
METADATA = {"release": "release.jsonl", "model": "model.jsonl", "sourceset": "sourceset.jsonl",
            "source": "source.jsonl"}
BATCHED = ("features", "activations", "explanations", "explanation_scores")
BATCH = re.compile(r"batch-(\d+)\.jsonl\.gz")


def jsonl(rows: list[dict]) -> bytes:
    """Rows as JSON lines; NaN or infinity is refused (JSON has no such numbers)."""
    return b"".join(json.dumps(row, allow_nan=False).encode() + b"\n" for row in rows)


def parse_jsonl(data: bytes, path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise FileReadError(f"{path} is not JSON lines ({problem}); export it again") from problem


class NeuronpediaExport:
    """One exported source: its metadata rows and its batched feature, activation and explanation rows."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def of_source(cls, root: Path | str, model_id: str, source_id: str) -> NeuronpediaExport:
        """``<root>/<modelId>/<sourceId>``: where Neuronpedia's import looks for a source."""
        return cls(Path(root) / check_name(model_id, "Neuronpedia model id") / check_name(source_id, "source id"))

    def __repr__(self) -> str:
        return f"NeuronpediaExport({str(self.path)!r})"

    def batch_path(self, kind: str, index: int) -> Path:
        return self.path / kind / f"batch-{index}.jsonl.gz"

    def batch_paths(self, kind: str) -> list[Path]:
        """The batches of ``kind`` in batch order."""
        found = [(int(m[1]), p) for p in (self.path / kind).glob("batch-*") if (m := BATCH.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def write_metadata(self, records: dict[str, list[dict]]) -> None:
        """The release, model, source set and source rows (one list each)."""
        for kind, name in METADATA.items():
            write_bytes(self.path / name, jsonl(records.get(kind, [])))

    def write_batch(self, kind: str, index: int, rows: list[dict]) -> Path:
        """One batch of ``kind``'s rows (the rows of one run of consecutive features)."""
        if kind not in BATCHED:
            raise ValueError(f"not a batched Neuronpedia export kind: {kind!r}")
        return write_bytes(self.batch_path(kind, index), gzip.compress(jsonl(rows), compresslevel=5, mtime=0))

    def keep_batches(self, kind: str, indices: set[int]) -> None:
        """Remove the batches of ``kind`` not in ``indices`` (what a previous, larger export left)."""
        for path in self.batch_paths(kind):
            if int(BATCH.fullmatch(path.name)[1]) not in indices:
                path.unlink()

    def read(self) -> dict[str, list[dict]]:
        """Every kind's rows, batches concatenated in order (an absent batched kind reads as no rows)."""
        if not (self.path / METADATA["source"]).exists():
            raise FileReadError(f"{self.path} is not a Neuronpedia export (no {METADATA['source']}); make one "
                                "with: workbench export neuronpedia <sae folder>")
        out = {kind: parse_jsonl((self.path / name).read_bytes(), self.path / name) for kind, name in METADATA.items()}
        for kind in BATCHED:
            out[kind] = []
            for path in self.batch_paths(kind):
                try:
                    data = gzip.decompress(path.read_bytes())
                except (OSError, EOFError) as problem:
                    raise FileReadError(f"{path} is not gzip ({problem}); export it again") from problem
                out[kind] += parse_jsonl(data, path)
        return out
