"""Neuronpedia's bulk-import row types, vendored for the export's schema test (nothing imports it at run time).

Source: the hijohnnylin/neuronpedia repository, utils/neuronpedia-utils/neuronpedia_utils/db_models/
(activation.py, explanation.py, feature.py, model.py, source.py, source_release.py, source_set.py), commit
ebb8426f (2026), copied verbatim but for the imports (merged at the top) and the ``from_dict`` helpers (dropped).
SAEDashboard's sae_dashboard/neuronpedia/neuronpedia_export.py inlines the same classes. ``ExplanationScore`` is
not among them: it is transcribed from the ``ExplanationScore`` model of apps/webapp/prisma/schema.prisma in the
same commit (relations left out, ``DateTime`` as ``datetime``).

Licence: Apache License 2.0 (the repository's LICENSE; copyright its authors).
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import List, Optional


@dataclass
class Activation:
    id: str
    tokens: List[str]
    index: str
    layer: str
    modelId: str
    maxValue: float
    maxValueTokenIndex: int
    minValue: float
    values: List[float]
    creatorId: str
    dataSource: Optional[str] = None
    dataIndex: Optional[str] = None
    dfaValues: List[float] = field(default_factory=list)
    dfaTargetIndex: Optional[int] = None
    dfaMaxValue: Optional[float] = None
    createdAt: datetime = field(default_factory=datetime.now)
    lossValues: List[float] = field(default_factory=list)
    logitContributions: Optional[str] = None
    binMin: Optional[float] = None
    binMax: Optional[float] = None
    binContains: Optional[float] = None
    qualifyingTokenIndex: Optional[int] = None
    zIndices: Optional[List[List[int]]] = None
    zValues: Optional[List[float]] = None


@dataclass
class Explanation:
    id: str
    modelId: str
    layer: str
    index: str
    description: str
    authorId: str

    embedding: Optional[list[float]] = None
    triggeredById: Optional[str] = None
    typeName: Optional[str] = None
    explanationModelName: Optional[str] = None
    notes: Optional[str] = None
    createdAt: datetime = field(default_factory=datetime.now)


@dataclass
class Feature:
    modelId: str
    layer: str
    index: str
    creatorId: Optional[str] = None
    createdAt: datetime = field(default_factory=datetime.now)
    maxActApprox: Optional[float] = 0
    hasVector: bool = False
    vector: List[float] = field(default_factory=list)
    vectorLabel: Optional[str] = None
    vectorDefaultSteerStrength: Optional[float] = 10
    hookName: Optional[str] = None
    topkCosSimIndices: List[int] = field(default_factory=list)
    topkCosSimValues: List[float] = field(default_factory=list)
    neuron_alignment_indices: List[int] = field(default_factory=list)
    neuron_alignment_values: List[float] = field(default_factory=list)
    neuron_alignment_l1: List[float] = field(default_factory=list)
    correlated_neurons_indices: List[int] = field(default_factory=list)
    correlated_neurons_pearson: List[float] = field(default_factory=list)
    correlated_neurons_l1: List[float] = field(default_factory=list)
    correlated_features_indices: List[int] = field(default_factory=list)
    correlated_features_pearson: List[float] = field(default_factory=list)
    correlated_features_l1: List[float] = field(default_factory=list)
    neg_str: List[str] = field(default_factory=list)
    neg_values: List[float] = field(default_factory=list)
    pos_str: List[str] = field(default_factory=list)
    pos_values: List[float] = field(default_factory=list)
    frac_nonzero: float = 0
    freq_hist_data_bar_heights: List[float] = field(default_factory=list)
    freq_hist_data_bar_values: List[float] = field(default_factory=list)
    logits_hist_data_bar_heights: List[float] = field(default_factory=list)
    logits_hist_data_bar_values: List[float] = field(default_factory=list)
    decoder_weights_dist: List[float] = field(default_factory=list)

    sourceSetName: Optional[str] = None


@dataclass
class Model:
    id: str
    instruct: bool
    creatorId: str
    displayNameShort: str = ""
    displayName: str = ""
    tlensId: Optional[str] = None
    dimension: Optional[int] = None
    visibility: str = "PUBLIC"
    defaultSourceSetName: Optional[str] = None
    defaultSourceId: Optional[str] = None
    inferenceEnabled: bool = True
    layers: int = 0
    neuronsPerLayer: int = 0
    createdAt: datetime = field(default_factory=datetime.now)
    owner: str = ""
    updatedAt: datetime = field(default_factory=datetime.now)
    website: Optional[str] = None


@dataclass
class Source:
    id: str
    modelId: str
    setName: str
    creatorId: str
    hasDashboards: bool = True
    inferenceEnabled: bool = False
    inferenceHosts: List[str] = field(default_factory=list)
    saelensConfig: Optional[str] = None
    saelensRelease: Optional[str] = None
    saelensSaeId: Optional[str] = None
    hfRepoId: Optional[str] = None
    hfFolderId: Optional[str] = None
    visibility: str = "PUBLIC"
    defaultOfModelId: Optional[str] = None
    hasUmap: bool = False
    hasUmapLogSparsity: bool = False
    hasUmapClusters: bool = False
    num_prompts: Optional[int] = None
    num_tokens_in_prompt: Optional[int] = None
    dataset: Optional[str] = None
    notes: Optional[str] = None
    createdAt: datetime = field(default_factory=datetime.now)


@dataclass
class SourceRelease:
    name: str
    description: str
    creatorName: str
    creatorId: str
    visibility: str = "PUBLIC"
    isNewUi: bool = False
    featured: bool = False
    descriptionShort: Optional[str] = None
    urls: List[str] = field(default_factory=list)
    creatorEmail: Optional[str] = None
    creatorNameShort: Optional[str] = None
    defaultSourceSetName: Optional[str] = None
    defaultSourceId: Optional[str] = None
    defaultUmapSourceIds: List[str] = field(default_factory=list)
    createdAt: datetime = field(default_factory=datetime.now)


@dataclass
class SourceSet:
    modelId: str
    name: str
    creatorId: str
    hasDashboards: bool = True
    visibility: str = "PRIVATE"
    description: str = ""
    type: str = ""
    creatorName: str = ""
    urls: List[str] = field(default_factory=list)
    creatorEmail: Optional[str] = None
    releaseName: Optional[str] = None
    defaultOfModelId: Optional[str] = None
    defaultRange: int = 1
    defaultShowBreaks: bool = True
    showDfa: bool = False
    showCorrelated: bool = False
    showHeadAttribution: bool = False
    showUmap: bool = False
    createdAt: datetime = field(default_factory=datetime.now)


@dataclass
class ExplanationScore:
    id: str
    initiatedByUserId: str
    value: float
    explanationId: str
    explanationScoreTypeName: str
    explanationScoreModelName: str
    jsonDetails: str = ""
    createdAt: datetime = field(default_factory=datetime.now)
