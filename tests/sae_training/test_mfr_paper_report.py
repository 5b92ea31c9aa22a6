"""benchmarks/mfr_paper.py --report: pooled and per-member tables from results.jsonl, paired by seed."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mfr_paper.py"


def load():
    spec = importlib.util.spec_from_file_location("mfr_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def member(mmcs, recovered, l0):
    return {"mmcs_true": mmcs, "mmcs_true_max": mmcs + 0.05, "recovered_fraction": recovered, "fvu": 0.05, "l0": l0}


def test_report_pairs_seeds_and_splits_members(tmp_path):
    rows = []
    for seed, (base0, base1, mfr0, mfr1) in enumerate([(0.7, 0.4, 0.6, 0.6), (0.68, 0.42, 0.62, 0.58)]):
        for lam, (a, b) in ((0.0, (base0, base1)), (3.0, (mfr0, mfr1))):
            rows.append({"sae": "tied", "k_schedule": "multiply", "lambda": lam, "seed": seed, "steps": 10,
                         "members": [member(a, 0.3, 32.0), member(b, 0.1, 64.0)]})
    rows.append({"sae": "tied", "k_schedule": "multiply", "lambda": 3.0, "seed": 7, "steps": 10,  # unpaired
                 "members": [member(0.9, 0.5, 32.0), member(0.9, 0.5, 64.0)]})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = load().report(path)
    pooled = next(line for line in text.splitlines() if line.startswith("| tied | 32/64 | 3 | 2 |"))
    assert "+0.0500, +0.0500 (mean +0.0500)" in pooled and pooled.endswith("| 2/2 |")
    member0 = next(line for line in text.splitlines() if line.startswith("| tied | 32/64 | 3 | 0 (L0 32) |"))
    member1 = next(line for line in text.splitlines() if line.startswith("| tied | 32/64 | 3 | 1 (L0 64) |"))
    assert "-0.1000, -0.0600 (mean -0.0800)" in member0 and member0.endswith("| 0/2 |")
    assert "+0.2000, +0.1600 (mean +0.1800)" in member1 and member1.endswith("| 2/2 |")
