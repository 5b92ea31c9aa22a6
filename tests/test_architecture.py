"""The layout's rules as tests: each folder kind's file names are spelled only by its owner class, and the
library never imports the CLI or the app."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("interp", "sae_training", "app", "benchmarks")

# file names of each folder kind -> the module that owns them
OWNED = {
    "interp/store/analysis_folder.py": ("meta.json", "summary.json", "features.parquet", "matches.parquet",
                                  "geometry_map.parquet", "cooccurrence_counts.parquet", "eval_summary.parquet",
                                  "svd_edges.parquet", "feature_circuit.json", "ioi_heads.parquet",
                                  "explanations.parquet", "explain_examples.parquet", "explain_run.json",
                                  "explanations.parts"),
    "interp/store/run_folder.py": ("config.json", "eval.json", "metrics.jsonl", "running.json", "train.log",
                             "app_launch.json", "app_launch_result.json",
                             "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"),  # SAELens member folders
    "interp/store/jobs.py": ("job.json", "job_result.json", "job.log"),
    "interp/cache/format.py": ("manifest.json",),
}
# name patterns of a folder kind that a plain substring cannot express -> their owner
OWNED_PATTERNS = {
    "interp/store/run_folder.py": (re.compile(r"step_(?![a-z])"),),  # checkpoints/step_<9 digits>.safetensors
}
# Modules that spell an owned name for another reason; remove an entry when it is no longer needed.
EXCEPTIONS = {
    "interp/models/loading.py": "a Hugging Face checkpoint's config.json: another folder kind, same file name",
}
BENCHMARK_APP_IMPORTS = {"app.commands.app"}  # bench_app launches the app it measures


def literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings excepted (docs may name files; code may not)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def modules() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if "demo" not in p.parent.name)


def test_only_a_folders_owner_spells_its_file_names():
    spelled = []
    for path in modules():
        name = path.relative_to(ROOT).as_posix()
        for owner, files in OWNED.items():
            if name in (owner, *EXCEPTIONS):
                continue
            spelled += [f"{name}:{line} spells {file!r} (ask {owner})" for line, text in literals(path)
                        for file in files if file in text]
    assert not spelled, "\n".join(spelled)


def test_only_a_folders_owner_spells_its_name_patterns():
    spelled = [f"{path.relative_to(ROOT).as_posix()}:{line} spells {text!r} (ask {owner})"
               for path in modules() for owner, patterns in OWNED_PATTERNS.items()
               if path.relative_to(ROOT).as_posix() != owner
               for line, text in literals(path) for pattern in patterns if pattern.search(text)]
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
    stale = [name for name in EXCEPTIONS if (ROOT / name).exists() and not any(
        file in text for _, text in literals(ROOT / name) for files in OWNED.values() for file in files)]
    assert not stale, f"remove from EXCEPTIONS: {stale}"


def test_the_library_never_imports_the_cli_or_the_app():
    for path in (p for folder in ("interp", "sae_training", "benchmarks") for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] == "app" and not (
                "benchmarks" in path.parts and n in BENCHMARK_APP_IMPORTS)]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pages_draw_only_with_the_figure_builders():
    """A page renders figures from ``interp.figures``; building one inline (importing plotly) belongs in a builder."""
    pages = [ROOT / "app/Home.py", *sorted((ROOT / "app/pages").glob("*.py"))]
    inline = []
    for path in pages:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            inline += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.split(".")[0] == "plotly"]
    assert len(pages) > 1 and not inline, "\n".join(inline)
