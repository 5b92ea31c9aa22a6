"""Our outputs in SAEBench's layout, read back by SAEBench's own pydantic classes (``sae_bench`` 0.6.0) in a
separate environment: set ``SAEBENCH_PYTHON`` to the python of a venv holding ``sae-bench`` and ``pydantic``
(``pip install --no-deps sae-bench==0.6.0 pydantic``: its eval-output classes need nothing else). Skipped
without it; the layout checks that need no SAEBench run always."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from interp.evals.absorption import AbsorptionConfig, absorption_from_activations, absorption_parts
from interp.evals.core import core_output_parts, reconstruction_stats, weight_stats
from interp.evals.schema import EVAL_TYPE_IDS, check_flat, eval_output, metric_rows
from interp.evals.sparse_probing import sparse_probing_parts
from interp.evals.tasks import BinaryTask
from interp.store.errors import InputError
from tests.interp.evals_toys import exact_dictionary
from tests.interp.test_evals_absorption import planted_world
from tests.interp.test_evals_sparse_probing import planted

CLASSES = {"core": "sae_bench.evals.core.eval_output:CoreEvalOutput",
           "sparse_probing": "sae_bench.evals.sparse_probing.eval_output:SparseProbingEvalOutput",
           "absorption": "sae_bench.evals.absorption.eval_output:AbsorptionEvalOutput"}
CFG = {"architecture": "topk", "d_sae": 16, "d_in": 8, "training_tokens": 1000}
VALIDATE = """
import importlib, json, sys
from pydantic import TypeAdapter
for path, target in zip(sys.argv[1::2], sys.argv[2::2]):
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    out = TypeAdapter(cls).validate_python(json.load(open(path)))
    print(name, type(out.eval_result_metrics).__name__, out.eval_type_id)
"""


def outputs() -> dict[str, dict]:
    torch.manual_seed(0)
    x = torch.randn(100, 8)
    recon, per_latent = reconstruction_stats(exact_dictionary(8), [(x, torch.arange(100) // 10)])
    down = {"kl_div_score": 0.9, "kl_div_with_ablation": 2.0, "kl_div_with_sae": 0.2, "ce_loss_score": 0.95,
            "ce_loss_with_ablation": 6.0, "ce_loss_with_sae": 4.1, "ce_loss_without_sae": 4.0, "n_tokens": 64}
    core = core_output_parts(recon, per_latent, weight_stats(exact_dictionary(8)), down)
    (x_tr, z_tr, y_tr), (x_te, z_te, y_te) = planted(100, 0), planted(60, 1)
    task = BinaryTask("t", "set", [f"a{i}" for i in range(100)], y_tr.tolist(), [f"b{i}" for i in range(60)],
                      y_te.tolist())
    probing = sparse_probing_parts([task], [(list(range(100)), list(range(100, 160)))], torch.cat([x_tr, x_te]),
                                   torch.cat([z_tr, z_te]))
    dictionary, train_x, train_words, test_x, test_words = planted_world()
    config = AbsorptionConfig()
    absorption = absorption_parts(absorption_from_activations(dictionary, train_x, train_words, test_x, test_words,
                                                              config), config, None, dictionary.d_sae)
    return {name: eval_output(name, {"k_values": [1, 2]}, *parts[:2], "run/sae_0", "run", CFG, parts[2])
            for name, parts in (("core", core), ("sparse_probing", probing), ("absorption", absorption))}


def test_the_layout_is_saebench_s():
    for name, output in outputs().items():
        assert output["eval_type_id"] == EVAL_TYPE_IDS[name] and len(output["eval_id"]) == 36
        check_flat(output["eval_result_metrics"])
        json.dumps(output, allow_nan=False)  # NaN is written as null, never as a bare NaN
        rows = metric_rows(output)
        assert rows and all(isinstance(r["value"], float) for r in rows)
    with pytest.raises(InputError, match="flat"):
        check_flat({"mean": {"nested": {"a": 1}}})


@pytest.mark.skipif(not os.environ.get("SAEBENCH_PYTHON"), reason="set SAEBENCH_PYTHON to a venv with sae-bench")
def test_saebench_s_own_classes_load_our_json(tmp_path):
    args = []
    for name, output in outputs().items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(output))
        args += [str(path), CLASSES[name]]
    done = subprocess.run([os.environ["SAEBENCH_PYTHON"], "-c", VALIDATE, *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["CoreEvalOutput CoreMetricCategories core",
                                          "SparseProbingEvalOutput SparseProbingMetricCategories sparse_probing",
                                          "AbsorptionEvalOutput AbsorptionMetricCategories absorption_first_letter"]
