"""The graph pipeline: stored graph round-trips, tables and the circuit-tracer export agree with the graph, the
page shows it, and the CLI runs on the demo model."""

import json
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the shared toys importable
from attribution_toys import A_TOKEN, planted_supernode_model, random_model_and_transcoders

from interp.circuits.attribution.export import cantor_pairing
from interp.figures.attribution import collapse_supernodes, with_supernodes
from interp.pipeline.attribution import analyze_graph, read_graph
from interp.store.analysis_folder import AnalysisFolder, graph_slugs
from sae_training.transcoder import save_transcoder

IOI_PROMPT = "When Romeo and Juliet went to the court, Romeo gave a ring to"
APP = Path(__file__).resolve().parents[2] / "app"
# circuit-tracer's frontend/graph_models.Node fields (pydantic; the viewer reads these keys)
NODE_FIELDS = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
               "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}


def saved_runs(root: Path, transcoders, context_size: int) -> list[Path]:
    """The transcoders saved as run folders ``root/runs/tc-L<i>`` (what ``analyze_graph`` is given)."""
    return [save_transcoder(root / "runs" / f"tc-L{i}" / "sae_0", tc, model_name="toy",
                            context_size=context_size).parent for i, tc in enumerate(transcoders)]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    model, transcoders = random_model_and_transcoders()
    folder, summary = analyze_graph(model, saved_runs(root, transcoders, 16), list(range(1, 12)), root / "analyses",
                                    slug="toy", n_checks=10)
    return root, model, transcoders, folder, summary


def test_the_stored_graph_round_trips_and_its_tables_agree(stored):
    root, _, _, folder, summary = stored
    graph, read_summary = read_graph(folder)
    assert graph_slugs(root / "analyses") == ["toy"] and read_summary == json.loads(json.dumps(summary))
    nodes, edges = folder.read_table("graph_nodes"), folder.read_table("graph_edges")
    assert len(nodes) == graph.n_nodes and int(nodes["kept"].sum()) == summary["kept_nodes"]
    assert len(edges) == summary["kept_edges"]
    torch.testing.assert_close(torch.tensor(edges["weight"].to_numpy()),
                               graph.adjacency[torch.tensor(edges["target"].to_numpy()),
                                               torch.tensor(edges["source"].to_numpy())])
    assert summary["max_completeness_residual"] < 1e-4
    assert summary["intervention"]["max_replacement_error"] < 1e-4 and len(folder.read_table("graph_checks")) == 10
    for path in summary["top_paths"]:  # from a node without inputs (a token or an error) to the top logit
        nodes = path["nodes"]
        assert nodes[0].startswith("token") or " error " in nodes[0]
        assert nodes[-1].startswith("logit") and len(path["weights"]) == len(nodes) - 1
        assert all(w != 0 for w in path["weights"])


def test_a_capped_graph_stores_what_it_left_out(tmp_path, monkeypatch):
    """``max_feature_nodes`` through the pipeline: the stored graph has the cap's features, the dropped input per
    target and the count of active features, and its completeness identity holds with them."""
    model, transcoders = random_model_and_transcoders()
    folder, summary = analyze_graph(model, saved_runs(tmp_path, transcoders, 16), list(range(1, 12)),
                                    tmp_path / "analyses", slug="capped", n_checks=5, max_feature_nodes=10)
    graph, read_summary = read_graph(folder)
    assert graph.n_features == summary["n_features"] == 10 < graph.n_active_features == summary["n_active_features"]
    assert summary["max_feature_nodes"] == 10 and any("10 of the" in note for note in read_summary["notes"])
    assert graph.dropped.abs().max() > 0 and summary["max_completeness_residual"] < 1e-4
    assert len(folder.read_table("graph_nodes")) == graph.n_nodes
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))  # the page says the graph is capped
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"10 of the {graph.n_active_features} active features" in info.value for info in at.info)
    viewer = [c.value for c in at.caption if "viewer reads" in c.value]  # the export's folder, workspace-relative
    assert viewer and "analyses/graphs/capped/circuit_tracer" in viewer[0] and str(tmp_path) not in viewer[0]


def test_the_circuit_tracer_export_follows_its_schema(stored):
    _, _, _, folder, summary = stored
    graph, _ = read_graph(folder)
    exported = json.loads((folder.circuit_tracer_dir() / "toy.json").read_text())
    index = json.loads((folder.circuit_tracer_dir() / "graph-metadata.json").read_text())
    assert index["graphs"][0]["slug"] == "toy" and exported["metadata"]["prompt_tokens"] == graph.token_strings
    assert set(exported) == {"metadata", "qParams", "nodes", "links"}
    ids = {node["node_id"]: node for node in exported["nodes"]}
    assert all(set(node) == NODE_FIELDS for node in exported["nodes"])
    assert all(link["source"] in ids and link["target"] in ids for link in exported["links"])
    assert len(exported["links"]) <= summary["kept_edges"]
    layer, pos, feature = graph.active_features[0].tolist()
    node_id = f"{layer}_{feature}_{pos}"
    if node_id in ids:
        assert ids[node_id]["feature"] == cantor_pairing(layer, feature)
    logits = [n for n in exported["nodes"] if n["feature_type"] == "logit"]
    assert len(logits) == graph.n_logits and logits[0]["is_target_logit"]
    top = next(link for link in exported["links"] if link["target"] == logits[0]["node_id"])
    source = next(i for i in range(graph.n_nodes) if _node_id(graph, i) == top["source"])
    assert top["weight"] == pytest.approx(float(graph.adjacency[graph.logit_index(0), source]))


def _node_id(graph, node):
    info = graph.describe(node)
    if info["kind"] == "feature":
        return f"{info['layer']}_{info['feature']}_{info['pos']}"
    if info["kind"] == "error":
        return f"0_{info['layer']}_{info['pos']}"
    if info["kind"] == "token":
        return f"E_{int(graph.tokens[info['pos']])}_{info['pos']}"
    return f"{graph.n_layers + 1}_{int(graph.logit_tokens[node - graph.logit_start])}_{info['pos']}"


def test_the_page_shows_the_graph_and_its_scores(stored, monkeypatch):
    root, _, _, _, summary = stored
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Replacement score"] == f"{summary['replacement_score']:.3f}"
    assert len(at.slider) == 2 and at.slider[0].value == 0.8 and at.slider[1].value == 0.98
    at.slider[0].set_value(0.5).run()
    assert not at.exception
    node_box = at.selectbox[1]
    assert len(node_box.options) <= summary["kept_nodes"]  # fewer nodes kept at the lower threshold
    assert len(at.dataframe) >= 2


def test_the_page_on_an_empty_workspace_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception and at.error
    assert any(code.value.startswith("workbench analyze graph") for code in at.code)


def demo_transcoder_flags(tmp_path: Path) -> list[str]:
    """``-t`` flags of random TopK transcoders of the demo model's width, saved under ``tmp_path``."""
    from interp.features.transcoder import Transcoder

    g = torch.Generator().manual_seed(0)
    paths = []
    for layer in range(2):
        tc = Transcoder(torch.randn(128, 256, generator=g) / 11, torch.zeros(256),
                        torch.randn(256, 128, generator=g) / 16, torch.zeros(128), "topk", k=8,
                        hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out")
        paths += ["-t", str(save_transcoder(tmp_path / f"L{layer}", tc, model_name="demo", context_size=128))]
    return paths


def test_the_cli_draws_a_graph_on_the_demo_model(tmp_path):
    """Random transcoders of the demo model's width: the command runs end to end and says what it found."""
    from typer.testing import CliRunner

    from app.cli import app

    paths = demo_transcoder_flags(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "analyze",
            "graph",
            "--prompt",
            IOI_PROMPT,
            *paths,
            "--out",
            str(tmp_path / "analyses"),
            "--slug",
            "ioi",
            "--checks",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "memory estimate" in result.output and "top paths" in result.output
    assert "supernodes by lobes" in result.output and "had no geometry analysis" in result.output  # said, not failed
    assert AnalysisFolder.graph(tmp_path / "analyses", "ioi").has_graph
    capped = CliRunner().invoke(app, ["analyze", "graph", "--prompt", IOI_PROMPT, *paths, "--out",
                                      str(tmp_path / "analyses"), "--slug", "ioi-capped", "--checks", "3",
                                      "--max-feature-nodes", "12"])
    assert capped.exit_code == 0, capped.output
    assert "12 of " in capped.output and "active features (max feature nodes)" in capped.output
    assert "target rows" in capped.output
    bad = CliRunner().invoke(app, ["analyze", "graph", "--prompt", "x " * 200, *paths, "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "context" in bad.output


def test_demo_runs_the_transcoder_step_unless_told_not_to(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app
    from app.commands import demo

    ran = []
    monkeypatch.setattr(demo, "demo_steps", lambda tokens: [])
    monkeypatch.setattr(demo, "demo_transcoders_step", lambda workspace: ran.append(workspace) or "graphs drawn")
    skipped = CliRunner().invoke(app, ["demo", "--workspace", str(tmp_path / "a"), "--no-transcoders"])
    assert skipped.exit_code == 0 and not ran
    default = CliRunner().invoke(app, ["demo", "--workspace", str(tmp_path / "b")])
    assert default.exit_code == 0 and ran == [tmp_path / "b"] and "graphs drawn" in default.output


@pytest.fixture(scope="module")
def planted_supernode(tmp_path_factory):
    """The planted model with two co-firing same-direction features (A1, A2), drawn by the pipeline."""
    root = tmp_path_factory.mktemp("planted")
    model, transcoders = planted_supernode_model()
    folder, summary = analyze_graph(model, saved_runs(root, transcoders, 8), [0, A_TOKEN, 2, 3], root / "analyses",
                                    slug="planted", node_threshold=0.99, n_checks=5)
    return root, folder, summary


def test_the_pipeline_stores_the_planted_supernode_with_its_score(planted_supernode):
    _, folder, summary = planted_supernode
    graph, stored = read_graph(folder)
    a1, a2 = graph.feature_index(0, 1, 0), graph.feature_index(0, 1, 1)
    groups = {tuple(g["nodes"]): g for g in stored["supernodes"]}
    assert (a1, a2) in groups and stored["supernodes"] == json.loads(json.dumps(summary["supernodes"]))
    assert groups[(a1, a2)]["ratio"] == pytest.approx(1.0, abs=1e-5)
    c = graph.feature_index(0, 3, 2)  # the unrelated feature is in no group
    assert not any(c in g["nodes"] for g in stored["supernodes"])


def test_collapsing_a_supernode_sums_its_edges(planted_supernode):
    _, folder, summary = planted_supernode
    graph, _ = read_graph(folder)
    nodes, edges = folder.read_table("graph_nodes"), folder.read_table("graph_edges")
    nodes = nodes[nodes["kept"]]
    a1, a2, b = graph.feature_index(0, 1, 0), graph.feature_index(0, 1, 1), graph.feature_index(1, 3, 1)
    group = next(g["nodes"] for g in summary["supernodes"] if a1 in g["nodes"])
    merged, moved = collapse_supernodes(nodes, edges, [group])
    assert a1 in set(merged["node"]) and a2 not in set(merged["node"]) and len(merged) == len(nodes) - 1
    weight = moved[(moved["target"] == b) & (moved["source"] == a1)]["weight"]
    assert float(weight.iloc[0]) == pytest.approx(float(graph.adjacency[b, a1] + graph.adjacency[b, a2]))
    assert with_supernodes(nodes, [group]).set_index("node").at[a2, "supernode"] == 0


def test_the_page_lists_and_collapses_supernodes(planted_supernode, monkeypatch):
    root, folder, summary = planted_supernode
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(root))
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(frame.value for frame in at.dataframe if "score (ratio)" in frame.value.columns)
    assert len(table) == len(summary["supernodes"]) and table["score (ratio)"].iloc[0] == pytest.approx(
        summary["supernodes"][0]["ratio"])
    names = {trace["name"] for trace in _figure(at)["data"] if trace.get("mode") == "markers"}
    assert {f"supernode {g}" for g in range(len(summary["supernodes"]))} <= names  # coloured by group
    at.radio(key="view").set_value("collapsed").run()
    assert not at.exception
    labels = [t for trace in _figure(at)["data"] if trace.get("mode") == "markers" for t in trace["text"]]
    assert sum(label.startswith("supernode ") for label in labels) == len(summary["supernodes"])


def _figure(at) -> dict:
    chart = at.get("plotly_chart")[0]
    return json.loads(chart.proto.spec if hasattr(chart, "proto") else chart.spec)


def test_an_interrupted_rewrite_leaves_no_graph(tmp_path, monkeypatch):
    """The graph JSON (scores, supernodes) goes first and comes back last: a failure between leaves no graph."""
    from interp.store import analysis_folder

    model, transcoders = planted_supernode_model()
    paths = saved_runs(tmp_path, transcoders, 8)
    folder, _ = analyze_graph(model, paths, [0, A_TOKEN, 2, 3], tmp_path / "analyses", slug="g", n_checks=2)
    assert folder.has_graph

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(analysis_folder, "write_safetensors", fail)
    with pytest.raises(OSError):
        analyze_graph(model, paths, [0, A_TOKEN, 2, 3], tmp_path / "analyses", slug="g", n_checks=2)
    assert not folder.has_graph and graph_slugs(tmp_path / "analyses") == []


def test_a_graph_of_an_older_format_is_refused_with_the_command_that_rebuilds_it(tmp_path, monkeypatch):
    """A graph JSON without ``format_version`` (written before session 7's token/BOS conventions) is not drawn:
    ``read_graph`` and the page name the ``workbench analyze graph`` line, and that line rebuilds it."""
    import shlex

    from typer.testing import CliRunner

    from app.cli import app
    from interp.circuits.attribution.graph import GRAPH_FORMAT
    from interp.pipeline.attribution import StaleGraphError, stale_graph

    analyses = tmp_path / "analyses"
    flags = demo_transcoder_flags(tmp_path)
    made = CliRunner().invoke(app, ["analyze", "graph", "--prompt", "Romeo gave a ring to", *flags,
                                    "--out", str(analyses), "--slug", "old", "--checks", "2"])
    assert made.exit_code == 0, made.output
    folder = AnalysisFolder.graph(analyses, "old")
    meta = folder.read_graph_meta()
    assert meta["format_version"] == GRAPH_FORMAT
    for version in (None, GRAPH_FORMAT + 1):  # older (no field) and newer
        aged = {k: v for k, v in meta.items() if k != "format_version"}
        folder.write_json("attribution_graph", aged if version is None else {**aged, "format_version": version})
        with pytest.raises(StaleGraphError, match="rebuild it with: workbench analyze graph") as refused:
            read_graph(folder)
        assert ("format 1" if version is None else "newer workbench") in str(refused.value)
    folder.write_json("attribution_graph", {k: v for k, v in meta.items() if k != "format_version"})
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception and at.error and "not drawn" in at.error[0].value and not at.get("plotly_chart")
    command = at.code[0].value
    assert command == stale_graph(folder).command and command.startswith("workbench analyze graph --prompt")
    rebuilt = CliRunner().invoke(app, shlex.split(command)[1:])  # the line as printed, without "workbench"
    assert rebuilt.exit_code == 0, rebuilt.output
    graph, _ = read_graph(folder)
    assert graph.prompt == "Romeo gave a ring to" and folder.read_graph_meta()["format_version"] == GRAPH_FORMAT
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    assert not at.exception and not at.error and at.get("plotly_chart")


def test_supernodes_by_the_stored_lobes_and_crystals(tmp_path, monkeypatch):
    """Layer 0's transcoder has a geometry analysis (planted lobes: C and D in one, A1 and A2 apart; one crystal
    of A1 and A2), layer 1's has none: the lobe and crystal groups follow the planted geometry, layer 1 is named
    in a note with the command that makes its geometry, and the page switches between the groupings."""
    import pandas as pd
    from typer.testing import CliRunner

    from app.cli import app

    model, transcoders = planted_supernode_model()
    runs = saved_runs(tmp_path, transcoders, 8)
    geometry = AnalysisFolder.of_sae(tmp_path / "analyses", runs[0] / "sae_0")
    geometry.write_analysis("geometry", {
        "geometry_lobe_labels": pd.DataFrame({"feature": [0, 1, 2, 3], "lobe": [0, 1, 2, 2], "k": 3,
                                              "affinity": "phi"}),
        "geometry_crystals": pd.DataFrame({"a": [0], "b": [1], "c": [0], "d": [1], "cluster": [0]})},
        {"options": {}, "counts_sha256": None})
    folder, summary = analyze_graph(model, runs, [0, A_TOKEN, 2, 3], tmp_path / "analyses", slug="geo",
                                    node_threshold=0.99, n_checks=2)
    graph, stored = read_graph(folder)
    by = stored["supernode_groupings"]
    assert set(by) == {"decoder", "lobes", "crystals"} and stored["supernodes"] == by["decoder"]["groups"]
    a1, a2 = graph.feature_index(0, 1, 0), graph.feature_index(0, 1, 1)
    kept = set(folder.read_table("graph_nodes").query("kept").node)
    c_and_d = sorted(n for n in kept if n < graph.n_features and graph.active_features[n, 0] == 0
                     and graph.active_features[n, 2] in (2, 3))
    assert [g["nodes"] for g in by["lobes"]["groups"]] == [c_and_d]
    assert [a1, a2] in [g["nodes"] for g in by["crystals"]["groups"]]
    for result in (by["lobes"], by["crystals"]):
        assert all(g["ratio"] is not None for g in result["groups"])
        assert len(result["notes"]) == 1 and "layer 1's transcoder" in result["notes"][0]
        assert "workbench analyze geometry" in result["notes"][0] and by["decoder"]["notes"] == []
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path))
    at = AppTest.from_file(str(APP / "pages" / "6_Attribution.py"), default_timeout=120).run()
    at.radio(key="grouping").set_value("lobes").run()
    assert not at.exception and any("layer 1's transcoder" in info.value for info in at.info)
    table = next(frame.value for frame in at.dataframe if "score (ratio)" in frame.value.columns)
    assert len(table) == 1 and table["layer"].iloc[0] == 0
    bad = CliRunner().invoke(app, ["analyze", "graph", "--prompt", "x", "-t", str(runs[0]), "--supernodes", "galaxy"])
    assert bad.exit_code != 0 and "unknown supernode grouping" in bad.output and "Traceback" not in bad.output
