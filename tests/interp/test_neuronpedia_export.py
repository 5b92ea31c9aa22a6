"""The Neuronpedia export: hand-set dashboards and explanations written, read back value for value, and every row
checked against Neuronpedia's own row types (vendored in ``data/neuronpedia_db_models.py``) as a JSON Schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from datetime import datetime
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from interp.features.neuronpedia import LLM_METHOD, RULE_METHOD, hook_layer
from interp.pipeline.export import ExportOptions, export_member, read_neuronpedia
from interp.store.analysis_folder import EXPLAIN_RUN, EXPLANATIONS, AnalysisFolder
from interp.store.errors import InputError
from interp.store.neuronpedia_export import NeuronpediaExport

HOOK = "blocks.2.hook_resid_post"
WHEN = "2026-01-02T03:04:05"
F32 = np.float32


def analysed_sae(root: Path) -> AnalysisFolder:
    """``<root>/analyses/run/sae_0`` with hand-set dashboards of 3 features (0 and 1 fire, 2 is dead) and
    explanations (0 by rule and LLM, 1 by rule with a NaN score, 2 dead)."""
    rng = np.random.default_rng(0)
    acts = lambda n: rng.random(n).astype(F32) * 3  # noqa: E731
    features = pd.DataFrame({"feature": [0, 1, 2], "label": ["a", "b", "(dead)"], "n_fires": [9, 2, 0],
                             "frequency": np.array([0.09, 0.02, 0.0]), "log10_frequency": [-1.05, -1.7, -11.0],
                             "mean_activation": acts(3), "max_activation": np.array([2.5, 1.25, 0.0], dtype=F32),
                             "top_token_ids": [[5, 6], [7], []]})
    rows = []
    for feature, kind, rank, band, n in ((0, "top", 0, 0, 4), (0, "top", 1, 0, 5), (0, "quantile", 6, 0, 3),
                                         (0, "quantile", 7, 0, 4), (0, "quantile", 8, 1, 2), (1, "top", 0, 0, 3)):
        values = acts(n)
        center = n // 2
        rows.append({"feature": feature, "kind": kind, "rank": rank, "band": band, "activation": values[center],
                     "sequence": int(rng.integers(0, 100)), "position": center, "token_id": 5,
                     "token": f"t{center}", "context_ids": list(range(n)),
                     "context_tokens": [f" w{i}" for i in range(n)], "context_acts": values.tolist(),
                     "center": center})
    examples = pd.DataFrame(rows)
    examples["context_acts"] = [np.asarray(v, dtype=F32) for v in examples.context_acts]
    histograms = pd.DataFrame({"feature": [0, 0, 1], "bin": [3, 7, 3], "bin_left": [0.1, 1.0, 0.1],
                               "bin_right": [0.2, 2.0, 0.2], "count": [4, 5, 2]})
    logits = pd.DataFrame({"feature": [0, 0, 0, 0, 1, 1], "sign": ["positive", "positive", "negative", "negative",
                                                                   "positive", "negative"],
                           "rank": [0, 1, 0, 1, 0, 0], "token_id": [1, 2, 3, 4, 1, 3],
                           "token": [" dog", " cat", " car", "é", " dog", " car"], "logit": acts(6) - 1.5})
    neighbours = pd.DataFrame({"feature": [0, 0, 1, 1, 2, 2], "rank": [0, 1, 0, 1, 0, 1], "other": [1, 2, 0, 2, 0, 1],
                               "cosine": np.array([0.5, 0.25, 0.5, 0.125, np.nan, np.nan], dtype=F32)})
    cooccurrence = pd.DataFrame({"feature": [0, 1], "rank": [0, 0], "other": [1, 0], "count": [2, 2],
                                 "jaccard": [0.2, 0.2], "phi": [0.375, np.nan]})
    root = Path(root)
    folder = AnalysisFolder(root / "analyses" / "run" / "sae_0")
    folder.write_analysis("dashboards", {"features": features, "examples": examples, "histograms": histograms,
                                         "logits": logits, "neighbours": neighbours, "cooccurrence": cooccurrence},
                          {"sae": "runs/run/sae_0", "cache": "cached_activations/gone", "hook": HOOK,
                           "n_tokens": 100, "n_blocks": 10, "d_sae": 3, "d_in": 4, "logits": True, "config": {}})
    explanations = pd.DataFrame({
        "feature": [0, 1, 2], "status": ["explained", "explained", "dead"],
        "explanation": ["' dog' or ' cat'", "' car'", ""], "family": ["tokens", "tokens", "never"],
        "fit": [0.5, 0.25, np.nan], "detection": [0.75, np.nan, np.nan], "detection_hard": [0.625, 0.5, np.nan],
        "fuzzing": [0.875, 0.5, np.nan], "simulation": [0.3, 0.1, np.nan], "baseline_detection": [0.5, 0.5, np.nan],
        "baseline_detection_hard": [0.5, 0.5, np.nan], "baseline_fuzzing": [0.5, 0.5, np.nan],
        "baseline_simulation": [0.0, 0.0, np.nan], "llm_status": ["ok", "unreachable", None],
        "llm_explanation": ["dogs and cats", None, None], "llm_detection": [0.9, np.nan, np.nan],
        "llm_fuzzing": [0.8, np.nan, np.nan], "llm_baseline_detection": [0.5, np.nan, np.nan],
        "llm_baseline_fuzzing": [0.5, np.nan, np.nan]})
    folder.write_tables({EXPLANATIONS: explanations})
    folder.write_json(EXPLAIN_RUN, {"llm": {"model": "tiny-llm"}})
    return folder


OPTIONS = ExportOptions(model_id="tiny-model", source_set="wb-res", created_at=WHEN, batch_features=2)


def exported(tmp_path) -> tuple[AnalysisFolder, NeuronpediaExport]:
    folder = analysed_sae(tmp_path)
    return folder, export_member(tmp_path / "runs" / "run" / "sae_0", tmp_path / "analyses", tmp_path / "np", OPTIONS)


def test_the_export_reads_back_value_for_value(tmp_path):
    folder, export = exported(tmp_path)
    assert export.path == tmp_path / "np" / "tiny-model" / "2-wb-res"
    back = read_neuronpedia(export)["tables"]
    source = {name: folder.read_table(name) for name in ("features", "examples", "histograms", "logits",
                                                         "neighbours", "cooccurrence", EXPLANATIONS)}
    features = source["features"]
    assert back["features"].feature.tolist() == [0, 1, 2]
    assert back["features"].frequency.tolist() == features.frequency.tolist()
    assert back["features"].max_activation.tolist() == features.max_activation.astype(float).tolist()

    logits = source["logits"].sort_values(["feature", "sign", "rank"]).reset_index(drop=True)
    got = back["logits"].sort_values(["feature", "sign", "rank"]).reset_index(drop=True)
    assert got[["feature", "sign", "rank", "token"]].equals(logits[["feature", "sign", "rank", "token"]])
    assert got.logit.tolist() == logits.logit.astype(float).tolist()

    hist = source["histograms"]
    assert back["histograms"]["count"].tolist() == hist["count"].astype(float).tolist()
    assert back["histograms"].bin_center.tolist() == ((hist.bin_left + hist.bin_right) / 2).tolist()

    near = source["neighbours"].dropna()  # a dead feature's NaN cosines are left out (JSON has no NaN)
    assert back["neighbours"][["feature", "other"]].values.tolist() == near[["feature", "other"]].values.tolist()
    assert back["neighbours"].cosine.tolist() == near.cosine.astype(float).tolist()
    assert back["cooccurrence"][["feature", "other", "phi"]].values.tolist() == [[0, 1, 0.375]]

    examples = source["examples"]
    top = examples[examples.kind == "top"].sort_values(["feature", "rank"])
    quantile = examples[examples.kind == "quantile"].sort_values(["feature", "band", "rank"],
                                                                 ascending=[True, False, True])
    want = pd.concat([top, quantile]).sort_values("feature", kind="stable").reset_index(drop=True)
    got = back["examples"]
    assert got.kind.tolist() == want.kind.tolist() and got.band.tolist() == want.band.tolist()
    for column in ("feature", "sequence", "center"):
        assert got[column].tolist() == want[column].tolist()
    assert got.activation.tolist() == want.activation.astype(float).tolist()
    assert [list(t) for t in got.context_tokens] == [list(t) for t in want.context_tokens]
    assert [list(v) for v in got.context_acts] == [np.asarray(v, dtype=F32).astype(float).tolist()
                                                   for v in want.context_acts]

    explained = back["explanations"].set_index(["feature", "method"])
    assert sorted(explained.index) == [(0, LLM_METHOD + "tiny-llm"), (0, RULE_METHOD), (1, RULE_METHOD)]
    table = source[EXPLANATIONS].set_index("feature")
    for feature in (0, 1):
        rule = explained.loc[(feature, RULE_METHOD)]
        assert rule.explanation == table.explanation[feature]
        for score in ("fit", "detection", "detection_hard", "fuzzing", "simulation", "baseline_detection"):
            want_score = table[score][feature]
            assert (np.isnan(rule[score]) and np.isnan(want_score)) or rule[score] == want_score, score
    llm = explained.loc[(0, LLM_METHOD + "tiny-llm")]
    assert llm.explanation == "dogs and cats" and llm.detection == 0.9 and llm.baseline_fuzzing == 0.5


def test_an_export_is_reproducible_batched_and_replaces_the_last(tmp_path):
    _, export = exported(tmp_path)
    assert [p.name for p in export.batch_paths("features")] == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    first = {p: p.read_bytes() for p in sorted(export.path.rglob("*")) if p.is_file()}
    rows = read_neuronpedia(export)["records"]
    again = export_member(tmp_path / "runs" / "run" / "sae_0", tmp_path / "analyses", tmp_path / "np", OPTIONS)
    assert {p: p.read_bytes() for p in sorted(again.path.rglob("*")) if p.is_file()} == first
    one = export_member(tmp_path / "runs" / "run" / "sae_0", tmp_path / "analyses", tmp_path / "np",
                        dataclasses.replace(OPTIONS, batch_features=1024))
    assert [p.name for p in one.batch_paths("features")] == ["batch-0.jsonl.gz"]  # the stale batch-1 is gone
    assert read_neuronpedia(one)["records"] == rows
    ids = [r["id"] for r in rows["activations"]]
    assert len(set(ids)) == len(ids) == 6 and all(len(i) == 25 for i in ids)


def test_bad_input_is_one_clear_message(tmp_path):
    analysed_sae(tmp_path)
    with pytest.raises(InputError, match="pass --model-id"):  # the dashboards' cache is gone: no model name
        export_member(tmp_path / "runs" / "run" / "sae_0", tmp_path / "analyses", tmp_path / "np")
    with pytest.raises(InputError, match="workbench analyze features"):
        export_member(tmp_path / "runs" / "run" / "sae_1", tmp_path / "analyses", tmp_path / "np", OPTIONS)
    with pytest.raises(InputError, match="pass --layer"):
        hook_layer("hook_embed")
    with pytest.raises(InputError, match="not a Neuronpedia export"):
        read_neuronpedia(tmp_path)


# Neuronpedia's row types (vendored) as JSON Schemas: every field present (SAEDashboard writes a row's whole
# __dict__), no other field, each of its declared type.
MODELS_FILE = Path(__file__).parent / "data" / "neuronpedia_db_models.py"
KINDS = {"release": "SourceRelease", "model": "Model", "sourceset": "SourceSet", "source": "Source",
         "features": "Feature", "activations": "Activation", "explanations": "Explanation",
         "explanation_scores": "ExplanationScore"}


def db_models():
    spec = importlib.util.spec_from_file_location("neuronpedia_db_models", MODELS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def type_schema(annotation) -> dict:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        return {"anyOf": [type_schema(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": type_schema(args[0])}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null",
              datetime: "string"}
    return {"type": simple[annotation]}


def json_schema(cls) -> dict:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {name: type_schema(hints[name]) for name in names}, "required": names,
            "additionalProperties": False}


def test_every_row_fits_neuronpedia_s_row_types(tmp_path):
    _, export = exported(tmp_path)
    records, models = read_neuronpedia(export)["records"], db_models()
    for kind, name in KINDS.items():
        cls = getattr(models, name)
        validator = jsonschema.Draft202012Validator(json_schema(cls))
        assert records[kind], kind
        for row in records[kind]:
            errors = [e.message for e in validator.iter_errors(row)]
            assert not errors, (kind, errors)
            cls(**row)  # their own constructor takes it
            datetime.fromisoformat(row["createdAt"])


def test_the_schema_refuses_what_neuronpedia_would():
    """The schema check is not vacuous: a missing field, an extra one and a wrong type each fail."""
    schema = json_schema(db_models().Activation)
    row = {name: None for name in schema["properties"]}
    row |= {"id": "c1", "tokens": ["a"], "index": "0", "layer": "0-x", "modelId": "m", "maxValue": 1.0,
            "maxValueTokenIndex": 0, "minValue": 0.0, "values": [1.0], "creatorId": "u", "dfaValues": [],
            "createdAt": WHEN, "lossValues": []}
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(row))
    assert list(validator.iter_errors({k: v for k, v in row.items() if k != "values"}))
    assert list(validator.iter_errors(row | {"activation": 1.0}))
    assert list(validator.iter_errors(row | {"index": 0}))  # Neuronpedia's index is a string
