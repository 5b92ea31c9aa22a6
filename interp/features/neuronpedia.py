"""Our dashboards and explanations as Neuronpedia's bulk-import rows, and back (pure functions, no files).

The rows have every field of neuronpedia-utils' ``db_models`` dataclasses (``Feature`` = the Neuron table,
``Activation``, ``Explanation``, ``Model``, ``Source``, ``SourceSet``, ``SourceRelease``), in their order and
with their defaults, as SAEDashboard's ``neuronpedia_export`` writes them; scores follow the database's
``ExplanationScore`` table. What maps to what (``README.md``, "Neuronpedia export"):

- feature: ``frac_nonzero`` = frequency, ``maxActApprox`` = max activation, ``pos_*`` / ``neg_*`` = the logit
  effects, ``freq_hist_data_bar_*`` = the activation histogram (bin centres, counts), ``topkCosSim*`` = the
  nearest features by decoder cosine, ``correlated_features_*`` = the co-occurring features (``pearson`` = phi,
  the Pearson correlation of firing per co-occurrence block: a sequence or a window, as the dashboards' config
  says);
- activation: one per top or quantile example, ``tokens`` / ``values`` the context and this feature's activations,
  ``qualifyingTokenIndex`` the activating token, ``dataIndex`` its sequence; top examples have
  ``binMin = binContains = -1`` and ``binMax`` = the feature's max (SAEDashboard's convention), a quantile band's
  ``binMin`` / ``binMax`` are its examples' range and ``binContains`` its share of the sampled examples;
- explanation: one per explained feature (and one per LLM explanation), ``notes`` naming the method;
  score: one per finite score or baseline, ``explanationScoreTypeName`` our column name.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.store.errors import InputError
from interp.store.neuronpedia_export import FALLBACK_CREATOR_ID

RULE_METHOD = "workbench:rule"  # an Explanation's notes: which explainer made it
LLM_METHOD = "workbench:llm:"  # + the model the LLM endpoint served
RULE_SCORES = ("fit", "detection", "detection_hard", "fuzzing", "simulation", "baseline_detection",
               "baseline_detection_hard", "baseline_fuzzing", "baseline_simulation")
LLM_SCORES = ("llm_detection", "llm_fuzzing", "llm_baseline_detection", "llm_baseline_fuzzing")
LAYER = re.compile(r"blocks\.(\d+)\.")


@dataclass(frozen=True)
class SourceInfo:
    """Who and what an export is: Neuronpedia's model, source set and layer (source id ``<layer>-<set>``)."""

    model_id: str
    source_set: str
    layer: int
    hook: str
    created_at: str  # ISO 8601
    creator_id: str = FALLBACK_CREATOR_ID
    creator_name: str = "workbench"
    release: str = "workbench"
    description: str = ""
    n_prompts: int | None = None
    n_tokens_in_prompt: int | None = None
    dataset: str | None = None

    @property
    def source_id(self) -> str:
        return f"{self.layer}-{self.source_set}"


def hook_layer(hook: str) -> int:
    """The layer of a ``blocks.<n>.…`` hook (Neuronpedia names a source by its layer)."""
    match = LAYER.match(hook)
    if match is None:
        raise InputError(f"hook {hook!r} has no layer (blocks.<n>.…) and Neuronpedia names sources by layer; "
                         "pass --layer")
    return int(match[1])


def slug(text: str) -> str:
    """A Neuronpedia id: lower-case letters, digits and dashes."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not out:
        raise InputError(f"{text!r} gives an empty Neuronpedia id; pass --model-id / --source-set")
    return out


def row_id(*parts) -> str:
    """A stable 25-character id (cuid-shaped) from what a row is: the same export gives the same ids."""
    return "c" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def metadata_rows(info: SourceInfo) -> dict[str, list[dict]]:
    """The release, model, source set and source rows (one each)."""
    t, who = info.created_at, info.creator_id
    release = {"name": info.release, "description": info.description or info.release, "creatorName": info.creator_name,
               "creatorId": who, "visibility": "PUBLIC", "isNewUi": False, "featured": False,
               "descriptionShort": info.description or info.release, "urls": [], "creatorEmail": None,
               "creatorNameShort": info.creator_name, "defaultSourceSetName": None, "defaultSourceId": None,
               "defaultUmapSourceIds": [], "createdAt": t}
    model = {"id": info.model_id, "instruct": False, "creatorId": who, "displayNameShort": info.model_id,
             "displayName": info.model_id, "tlensId": None, "dimension": None, "visibility": "PUBLIC",
             "defaultSourceSetName": None, "defaultSourceId": None, "inferenceEnabled": False, "layers": 0,
             "neuronsPerLayer": 0, "createdAt": t, "owner": "", "updatedAt": t, "website": None}
    sourceset = {"modelId": info.model_id, "name": info.source_set, "creatorId": who, "hasDashboards": True,
                 "visibility": "PUBLIC", "description": info.description, "type": "", "creatorName": info.creator_name,
                 "urls": [], "creatorEmail": None, "releaseName": info.release, "defaultOfModelId": None,
                 "defaultRange": 1, "defaultShowBreaks": True, "showDfa": False, "showCorrelated": False,
                 "showHeadAttribution": False, "showUmap": False, "createdAt": t}
    source = {"id": info.source_id, "modelId": info.model_id, "setName": info.source_set, "creatorId": who,
              "hasDashboards": True, "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": None,
              "saelensRelease": None, "saelensSaeId": None, "hfRepoId": None, "hfFolderId": None,
              "visibility": "PUBLIC", "defaultOfModelId": None, "hasUmap": False, "hasUmapLogSparsity": False,
              "hasUmapClusters": False, "num_prompts": info.n_prompts, "num_tokens_in_prompt": info.n_tokens_in_prompt,
              "dataset": info.dataset, "notes": f"hook {info.hook}", "createdAt": t}
    return {"release": [release], "model": [model], "sourceset": [sourceset], "source": [source]}


def _lists(frame: pd.DataFrame | None, order: list[str], columns: tuple[str, ...],
           finite: str | None = None) -> dict[int, tuple[list, ...]]:
    """Each feature's ``columns`` as lists, rows in ``order``; with ``finite``, rows whose value there is not
    finite are left out (JSON has no NaN)."""
    if frame is None or frame.empty:
        return {}
    if finite is not None:
        frame = frame[np.isfinite(frame[finite].to_numpy(dtype=float))]
    frame = frame.sort_values(["feature", *order], kind="stable")
    feature = frame.feature.to_numpy()
    if not len(feature):
        return {}
    bounds = [*np.flatnonzero(np.r_[True, feature[1:] != feature[:-1]]).tolist(), len(feature)]
    values = [frame[column].tolist() for column in columns]
    return {int(feature[a]): tuple(v[a:b] for v in values) for a, b in zip(bounds[:-1], bounds[1:])}


def feature_rows(info: SourceInfo, features: pd.DataFrame, histograms: pd.DataFrame,
                 logits: pd.DataFrame | None = None, neighbours: pd.DataFrame | None = None,
                 cooccurrence: pd.DataFrame | None = None) -> list[dict]:
    """One Neuron row per feature (dashboards' ``features``, ``histograms``, ``logits``, ``neighbours``,
    ``cooccurrence`` tables; see ``interp/ANALYSES.md``)."""
    hist = _lists(histograms.assign(center=(histograms.bin_left + histograms.bin_right) / 2), ["bin"],
                  ("count", "center"))
    pos = _lists(None if logits is None else logits[logits.sign == "positive"], ["rank"], ("token", "logit"))
    neg = _lists(None if logits is None else logits[logits.sign == "negative"], ["rank"], ("token", "logit"))
    near = _lists(neighbours, ["rank"], ("other", "cosine"), finite="cosine")
    coo = _lists(cooccurrence, ["rank"], ("other", "phi"), finite="phi")
    none = ([], [])
    rows = []
    features = features.sort_values("feature")
    for i, top, freq in zip(features.feature.astype(int).tolist(), features.max_activation.astype(float).tolist(),
                            features.frequency.astype(float).tolist()):
        (counts, centers), (cos_i, cos_v), (phi_i, phi_v) = hist.get(i, none), near.get(i, none), coo.get(i, none)
        (pos_s, pos_v), (neg_s, neg_v) = pos.get(i, none), neg.get(i, none)
        rows.append({
            "modelId": info.model_id, "layer": info.source_id, "index": str(i), "creatorId": info.creator_id,
            "createdAt": info.created_at, "maxActApprox": top, "hasVector": False, "vector": [],
            "vectorLabel": None, "vectorDefaultSteerStrength": 10, "hookName": None,
            "topkCosSimIndices": [int(x) for x in cos_i], "topkCosSimValues": [float(v) for v in cos_v],
            "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
            "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
            "correlated_features_indices": [int(x) for x in phi_i],
            "correlated_features_pearson": [float(v) for v in phi_v], "correlated_features_l1": [],
            "neg_str": list(neg_s), "neg_values": [float(v) for v in neg_v],
            "pos_str": list(pos_s), "pos_values": [float(v) for v in pos_v],
            "frac_nonzero": freq,
            "freq_hist_data_bar_heights": [float(c) for c in counts],
            "freq_hist_data_bar_values": [float(v) for v in centers],
            "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [], "decoder_weights_dist": [],
            "sourceSetName": info.source_set,
        })
    return rows


def activation_rows(info: SourceInfo, examples: pd.DataFrame, features: pd.DataFrame) -> list[dict]:
    """One Activation row per example of the dashboards' ``examples`` table: top examples by rank, then each
    quantile band from the strongest down (Neuronpedia shows sections by ``binMax``, highest first)."""
    top_max = dict(zip(features.feature.astype(int).tolist(), features.max_activation.astype(float).tolist()))
    top = examples[examples.kind == "top"].sort_values(["feature", "rank"], kind="stable")
    top = top.assign(lo=-1.0, hi=top.feature.map(top_max), share=-1.0)
    quantile = examples[examples.kind == "quantile"]
    band = quantile.groupby(["feature", "band"]).activation
    quantile = quantile.assign(lo=band.transform("min").astype(float), hi=band.transform("max").astype(float),
                               share=band.transform("size") / quantile.groupby("feature").activation.transform("size"))
    quantile = quantile.sort_values(["feature", "band", "rank"], ascending=[True, False, True], kind="stable")
    ordered = pd.concat([top, quantile]).sort_values("feature", kind="stable")
    rows = []
    for e in ordered.itertuples(index=False):
        i, values = int(e.feature), [float(v) for v in e.context_acts]
        peak = int(np.argmax(values))
        rows.append({
            "id": row_id(info.model_id, info.source_id, i, e.kind, e.band, e.rank), "tokens": list(e.context_tokens),
            "index": str(i), "layer": info.source_id, "modelId": info.model_id, "maxValue": values[peak],
            "maxValueTokenIndex": peak, "minValue": min(values), "values": values, "creatorId": info.creator_id,
            "dataSource": None, "dataIndex": str(int(e.sequence)), "dfaValues": [], "dfaTargetIndex": None,
            "dfaMaxValue": None, "createdAt": info.created_at, "lossValues": [], "logitContributions": None,
            "binMin": float(e.lo), "binMax": float(e.hi), "binContains": float(e.share),
            "qualifyingTokenIndex": int(e.center), "zIndices": None, "zValues": None,
        })
    return rows


def _explanation(info: SourceInfo, feature: int, text: str, method: str) -> dict:
    return {"id": row_id(info.model_id, info.source_id, feature, method), "modelId": info.model_id,
            "layer": info.source_id, "index": str(feature), "description": text, "authorId": info.creator_id,
            "embedding": None, "triggeredById": None, "typeName": None, "explanationModelName": None,
            "notes": method, "createdAt": info.created_at}


def _scores(info: SourceInfo, explanation: dict, row, columns: tuple[str, ...], scorer: str) -> list[dict]:
    out = []
    for column in columns:
        value = getattr(row, column, None)
        if value is None or not math.isfinite(float(value)):
            continue
        out.append({"id": row_id(explanation["id"], column), "initiatedByUserId": info.creator_id,
                    "value": float(value), "explanationId": explanation["id"], "explanationScoreTypeName": column,
                    "explanationScoreModelName": scorer, "jsonDetails": "", "createdAt": info.created_at})
    return out


def explanation_rows(info: SourceInfo, explanations: pd.DataFrame,
                     llm_model: str | None = None) -> tuple[list[dict], list[dict]]:
    """Explanation and ExplanationScore rows from the ``explanations`` table: the rule explanation of every
    explained feature and, where the LLM answered, its explanation; each with its finite scores."""
    rows, scores = [], []
    for r in explanations.sort_values("feature").itertuples(index=False):
        if r.status != "explained":
            continue
        rule = _explanation(info, int(r.feature), r.explanation, RULE_METHOD)
        rows.append(rule)
        scores += _scores(info, rule, r, RULE_SCORES, RULE_METHOD)
        if getattr(r, "llm_status", None) == "ok" and isinstance(getattr(r, "llm_explanation", None), str):
            llm = _explanation(info, int(r.feature), r.llm_explanation, LLM_METHOD + (llm_model or "unknown"))
            rows.append(llm)
            scores += _scores(info, llm, r, LLM_SCORES, llm["notes"])
    return rows, scores


def batch_rows(info: SourceInfo, tables: dict[str, pd.DataFrame], llm_model: str | None = None) -> dict[str, list]:
    """The feature, activation, explanation and score rows of the features in ``tables`` (an analysis folder's
    ``features``, ``examples``, ``histograms``; ``logits``, ``neighbours``, ``cooccurrence``, ``explanations``
    where present), e.g. one batch of them."""
    records = {"features": feature_rows(info, tables["features"], tables["histograms"], tables.get("logits"),
                                        tables.get("neighbours"), tables.get("cooccurrence")),
               "activations": activation_rows(info, tables["examples"], tables["features"])}
    if "explanations" in tables:
        records["explanations"], records["explanation_scores"] = explanation_rows(info, tables["explanations"],
                                                                                  llm_model)
    return records


# reading back: Neuronpedia rows -> our tables' columns


def _long(rows: list[dict], index_key: str, value_key: str, columns: tuple[str, str], **fixed) -> pd.DataFrame:
    out = [{"feature": int(r["index"]), "rank": k, columns[0]: i, columns[1]: v, **fixed}
           for r in rows for k, (i, v) in enumerate(zip(r[index_key], r[value_key]))]
    return pd.DataFrame(out, columns=["feature", "rank", *columns, *fixed])


def tables_from_rows(records: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """What an export holds, in our tables' vocabulary: ``features`` (feature, frequency, max_activation),
    ``logits`` (feature, sign, rank, token, logit), ``histograms`` (feature, bin_center, count), ``neighbours``
    (feature, rank, other, cosine), ``cooccurrence`` (feature, rank, other, phi), ``examples`` (feature, kind,
    rank, band, activation, sequence, context_tokens, context_acts, center; ``band`` = the order of the quantile
    interval among the feature's, 0 weakest), ``explanations`` (feature, method, explanation, one column per score)."""
    feats = records["features"]
    features = pd.DataFrame({"feature": [int(r["index"]) for r in feats],
                             "frequency": [r["frac_nonzero"] for r in feats],
                             "max_activation": [r["maxActApprox"] for r in feats]})
    logits = pd.concat([_long(feats, "pos_str", "pos_values", ("token", "logit"), sign="positive"),
                        _long(feats, "neg_str", "neg_values", ("token", "logit"), sign="negative")], ignore_index=True)
    hist = _long(feats, "freq_hist_data_bar_values", "freq_hist_data_bar_heights", ("bin_center", "count"))
    examples = []
    for r in records["activations"]:
        top = r["binMin"] == -1 and r["binContains"] == -1
        examples.append({"feature": int(r["index"]), "kind": "top" if top else "quantile",
                         "interval": (r["binMin"], r["binMax"]), "activation": r["values"][r["qualifyingTokenIndex"]],
                         "sequence": int(r["dataIndex"]), "context_tokens": r["tokens"], "context_acts": r["values"],
                         "center": r["qualifyingTokenIndex"]})
    examples = pd.DataFrame(examples, columns=["feature", "kind", "interval", "activation", "sequence",
                                               "context_tokens", "context_acts", "center"])
    examples["rank"] = examples.groupby(["feature", "kind"]).cumcount()
    quantile = examples.kind == "quantile"
    examples["band"] = 0
    if quantile.any():  # each feature's intervals numbered from its weakest: global sorted group numbers, offset
        q = examples[quantile]
        number = q.groupby([q.feature, q.interval.str[0], q.interval.str[1]], sort=True).ngroup()
        examples.loc[quantile, "band"] = number - number.groupby(q.feature).transform("min")
    explained = {r["id"]: {"feature": int(r["index"]), "method": r["notes"], "explanation": r["description"]}
                 for r in records.get("explanations", [])}
    for s in records.get("explanation_scores", []):
        column = s["explanationScoreTypeName"]
        explained[s["explanationId"]][column.removeprefix("llm_") if column in LLM_SCORES else column] = s["value"]
    return {
        "features": features,
        "logits": logits[["feature", "sign", "rank", "token", "logit"]],
        "histograms": hist.rename(columns={"rank": "bin"}),
        "neighbours": _long(feats, "topkCosSimIndices", "topkCosSimValues", ("other", "cosine")),
        "cooccurrence": _long(feats, "correlated_features_indices", "correlated_features_pearson", ("other", "phi")),
        "examples": examples.drop(columns="interval")[["feature", "kind", "rank", "band", "activation", "sequence",
                                                       "context_tokens", "context_acts", "center"]],
        "explanations": pd.DataFrame(list(explained.values())),
    }

