"""The layout's rules as tests: each folder kind's file names are spelled only by its owner class, and the
library never imports the CLI or the app."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("interp", "sae_training", "app", "benchmarks")

# file names of each folder kind -> the module that owns them
OWNED = {
    "interp/store/analysis_folder.py": (
        "meta.json",
        "geometry.json",
        "summary.json",
        "features.parquet",
        "matches.parquet",
        "geometry_map.parquet",
        "cooccurrence_counts.parquet",
        "eval_summary.parquet",
        "svd_edges.parquet",
        "feature_circuit.json",
        "ioi_heads.parquet",
        "attribution_graph.safetensors",
        "attribution_graph.json",
        "graph_nodes.parquet",
        "graph_edges.parquet",
        "graph_checks.parquet",
        "graph-metadata.json",
        "eval_results.parquet",
        "explanations.parquet",
        "explain_examples.parquet",
        "explain_run.json",
        "explanations.parts",
    ),
    "interp/store/run_folder.py": (
        "config.json",
        "eval.json",
        "metrics.jsonl",
        "running.json",
        "train.log",
        "app_launch.json",
        "app_launch_result.json",
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    ),  # SAELens member folders
    "interp/store/jobs.py": ("job.json", "job_result.json", "job.log"),
    "interp/store/cache_manifest.py": ("manifest.json",),
    "interp/store/neuronpedia_export.py": ("release.jsonl", "model.jsonl", "sourceset.jsonl", "source.jsonl"),
}
# name patterns of a folder kind that a plain substring cannot express -> their owner
OWNED_PATTERNS = {
    "interp/store/run_folder.py": (re.compile(r"step_(?![a-z])"),),  # checkpoints/step_<9 digits>.safetensors
    "interp/store/neuronpedia_export.py": (re.compile(r"batch-.*jsonl"),),  # features/batch-<n>.jsonl.gz
}
# Modules that spell an owned name for another reason; remove an entry when it is no longer needed.
EXCEPTIONS = {
    "interp/models/loading.py": "a Hugging Face checkpoint's config.json: another folder kind, same file name",
}
BENCHMARK_APP_IMPORTS = {"app.commands.app"}  # bench_app launches the app it measures


def literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings excepted (docs may name files; code may not)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def modules() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if "demo" not in p.parent.name)


def test_only_a_folders_owner_spells_its_file_names():
    spelled = []
    for path in modules():
        name = path.relative_to(ROOT).as_posix()
        for owner, files in OWNED.items():
            if name in (owner, *EXCEPTIONS):
                continue
            spelled += [
                f"{name}:{line} spells {file!r} (ask {owner})"
                for line, text in literals(path)
                for file in files
                if file in text
            ]
    assert not spelled, "\n".join(spelled)


def test_only_a_folders_owner_spells_its_name_patterns():
    spelled = [
        f"{path.relative_to(ROOT).as_posix()}:{line} spells {text!r} (ask {owner})"
        for path in modules()
        for owner, patterns in OWNED_PATTERNS.items()
        if path.relative_to(ROOT).as_posix() != owner
        for line, text in literals(path)
        for pattern in patterns
        if pattern.search(text)
    ]
    assert not spelled, "\n".join(spelled)


def test_the_checkpoint_pattern_catches_the_old_spellings():
    """The pattern test would have flagged the name as ``checkpoint.py`` and ``run_status.py`` spelled it."""
    (pattern,) = OWNED_PATTERNS["interp/store/run_folder.py"]
    assert pattern.search("step_") and pattern.search(r"step_(\d+)\.safetensors")
    assert not pattern.search("step_seconds")
    tree = ast.parse('f"step_{step:09d}.safetensors"')
    assert any(pattern.search(node.value) for node in ast.walk(tree) if isinstance(node, ast.Constant))


def test_exceptions_are_still_needed():
    """An exception whose module no longer spells an owned name is removed from the list."""
    stale = [
        name
        for name in EXCEPTIONS
        if (ROOT / name).exists()
        and not any(file in text for _, text in literals(ROOT / name) for files in OWNED.values() for file in files)
    ]
    assert not stale, f"remove from EXCEPTIONS: {stale}"


def test_the_library_never_imports_the_cli_or_the_app():
    for path in (p for folder in ("interp", "sae_training", "benchmarks") for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            bad = [
                n
                for n in names
                if n.split(".")[0] == "app" and not ("benchmarks" in path.parts and n in BENCHMARK_APP_IMPORTS)
            ]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pages_draw_only_with_the_figure_builders():
    """A page renders figures from ``interp.figures``; building one inline (importing plotly) belongs in a builder."""
    pages = [ROOT / "app/Home.py", *sorted((ROOT / "app/pages").glob("*.py"))]
    inline = []
    for path in pages:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            inline += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] == "plotly"]
    assert len(pages) > 1 and not inline, "\n".join(inline)


# The rooms of ``interp``, lowest first: a package may import only from itself and the packages before it.
LAYERS = ("store", "models", "cache", "features", "circuits", "explain", "evals", "figures", "pipeline")
# Packages whose modules may write files: the owners, the cache writer (the cache folder's owner), the pipeline, and
# the demo model's recipe (it writes the bundled weights). Everything else returns data.
WRITERS = ("interp/store/", "interp/cache/", "interp/pipeline/", "interp/models/demo/")
WRITE_CALLS = {
    "write_tables",
    "write_json",
    "write_text",
    "write_bytes",
    "to_parquet",
    "to_csv",
    "save_file",
    "write_parquet",
    "write_safetensors",
    "replace_atomically",
    "write_metrics",
    "append_metrics",
}


def first_party_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, inside a function) for every import of ``interp``, ``sae_training`` or ``app``."""
    found = []
    tree = ast.parse(path.read_text())
    in_function = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "interp" else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [
            (node.lineno, n, id(node) in in_function)
            for n in names
            if n.split(".")[0] in ("interp", "sae_training", "app") and n != "interp"
        ]
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if parts[0] == "interp" and len(parts) > 1 and parts[1] in LAYERS else None


def interp_modules() -> list[Path]:
    return sorted((ROOT / "interp").rglob("*.py"))


def test_every_interp_module_lives_in_a_room():
    loose = [
        p.relative_to(ROOT).as_posix()
        for p in interp_modules()
        if p.parent == ROOT / "interp" and p.name != "__init__.py"
    ]
    assert not loose, f"modules outside the packages of interp: {loose}"
    rooms = {p.relative_to(ROOT / "interp").parts[0] for p in interp_modules() if p.parent != ROOT / "interp"}
    assert rooms <= set(LAYERS), f"packages not in LAYERS: {rooms - set(LAYERS)}"


# The demo model's recipe trains the bundled model and checks its circuits as it goes: a script on top of every room,
# filed beside the weights it writes.
RECIPE = ("interp/models/demo/general_phase.py", "interp/models/demo/train_demo_model.py")


def test_imports_point_down_the_layers():
    upward = []
    for path in (p for p in interp_modules() if p.relative_to(ROOT).as_posix() not in RECIPE):
        own = layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, module, _ in first_party_imports(path):
            target = layer_of(module)
            if module.split(".")[0] != "interp":
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} (interp imports no other package)")
            elif target is not None and target > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} from a higher room")
    assert not upward, "\n".join(upward)


def test_the_ground_floor_never_imports_torch():
    heavy = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "interp/store").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            name.split(".")[0] == "torch"
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        )
    ]
    assert not heavy, "interp/store imports torch at " + ", ".join(heavy)
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in sorted((ROOT / "interp/store").glob("*.py"))
        if p.name != "__init__.py"
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", "importing interp.store pulled in torch"


def test_library_imports_sit_at_the_top_of_modules():
    """A first-party import inside a function hides a dependency (or a circle): only the CLI commands keep theirs,
    so that `workbench --help` does not import every stage."""
    lazy = [
        f"{path.relative_to(ROOT)}:{line} imports {module} inside a function"
        for folder in ("interp", "sae_training")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "demo" not in path.relative_to(ROOT).parts
        for line, module, inside in first_party_imports(path)
        if inside
    ]
    assert not lazy, "\n".join(lazy)


def test_only_the_owners_and_the_pipeline_write_files():
    writes = []
    for path in interp_modules():
        name = path.relative_to(ROOT).as_posix()
        if name.startswith(WRITERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITE_CALLS:
                writes.append(f"{name}:{node.lineno} calls .{node.func.attr}()")
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("interp.store")
                and any(a.name in WRITE_CALLS for a in node.names)  # reading through an owner is fine
            ):
                writes.append(f"{name}:{node.lineno} imports a writer from {node.module}")
    assert not writes, "\n".join(writes)


def test_the_layer_rules_catch_what_they_forbid(tmp_path, monkeypatch):
    """The checks above would flag an upward import, a lazy import and a write in an analysis module."""
    bad = tmp_path / "interp" / "features" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "from interp.pipeline.sae import x\n\ndef f(frame):\n    from interp.store.io import read_json\n"
        "    frame.to_parquet('t.parquet')\n"
    )
    imports = first_party_imports(bad)
    assert [(m, inside) for _, m, inside in imports] == [("interp.pipeline.sae", False), ("interp.store.io", True)]
    assert layer_of("interp.pipeline.sae") > layer_of("interp.features.bad")
    calls = [
        n.func.attr
        for n in ast.walk(ast.parse(bad.read_text()))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert "to_parquet" in calls and "to_parquet" in WRITE_CALLS


# TransformerLens 4 removes HookedTransformer (TransformerBridge replaces it): every model is built in
# interp/models (load_model, random_model), so a 4.x backend is a change to that package alone
MODEL_CLASSES = {"HookedTransformer", "HookedTransformerConfig", "HookedSAETransformer"}
MODEL_BUILDERS = ("interp/models/",)


def model_class_uses(tree: ast.AST) -> list[str]:
    """Where a module imports or names a TransformerLens / SAELens model class."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("transformer_lens", "sae_lens"):
            found += [f"{node.lineno} imports {a.name}" for a in node.names if a.name in MODEL_CLASSES]
        if isinstance(node, ast.Attribute) and node.attr in MODEL_CLASSES:
            found.append(f"{node.lineno} uses .{node.attr}")
    return found


def test_only_interp_models_builds_transformer_lens_models():
    direct = [
        f"{path.relative_to(ROOT).as_posix()}:{use}"
        for path in modules()
        if not path.relative_to(ROOT).as_posix().startswith(MODEL_BUILDERS)
        for use in model_class_uses(ast.parse(path.read_text()))
    ]
    assert not direct, "build models with interp.models.loading (load_model, random_model):\n" + "\n".join(direct)


def test_the_model_class_rule_catches_imports_and_attributes():
    tree = ast.parse(
        "from transformer_lens import HookedTransformer\nimport transformer_lens\n"
        "m = transformer_lens.HookedTransformerConfig()\nfrom transformer_lens import FactoredMatrix"
    )
    assert model_class_uses(tree) == ["1 imports HookedTransformer", "3 uses .HookedTransformerConfig"]


def test_the_command_line_loads_no_stage_to_show_its_help():
    """`workbench --help` (and `workbench app`, which only launches the server) import the command modules, not the
    stages: no TransformerLens, SAELens, model loading or pipeline until a command runs (torch itself still comes with
    the training flags, read from the architecture registry)."""
    heavy = ("transformer_lens", "sae_lens", "interp.models", "interp.pipeline", "interp.circuits", "streamlit")
    code = f"import sys\nimport app.cli\nprint([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"importing app.cli pulled in {out.stdout.strip()}"
