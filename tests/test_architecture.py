"""docs/architecture.md's generated section matches the code (tools/architecture.py)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "architecture.py")
DOC = os.path.join(ROOT, "docs", "architecture.md")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("architecture_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_section_is_current(tool):
    assert tool.is_current(DOC), (
        "docs/architecture.md is stale: run python tools/architecture.py --write "
        "docs/architecture.md"
    )


def test_write_keeps_the_hand_written_text(tool, tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(f"# Title\n\nbefore\n\n{tool.BEGIN}\nstale text\n{tool.END}\n\nafter\n")
    assert not tool.is_current(path)
    assert tool.main(["--check", str(path)]) == 1
    assert tool.main(["--write", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + tool.BEGIN)
    assert text.endswith(tool.END + "\n\nafter\n")
    assert "stale text" not in text
    assert tool.main(["--check", str(path)]) == 0


def test_every_module_is_in_the_graph(tool):
    graph = tool.module_graph()
    assert "nengo_onnx.compiler.program" in graph
    assert "nengo_onnx.passes.merge" in graph  # passes/ is installed as nengo_onnx.passes
    assert "nengo_onnx.passes" in graph["nengo_onnx.compiler.pipeline"] or any(
        t.startswith("nengo_onnx.passes.") for t in graph["nengo_onnx.compiler.pipeline"]
    )
    assert tool.unit_of("nengo_onnx.compiler.emit.basic") == "compiler.emit"
    assert tool.unit_of("nengo_onnx.compiler.names") == "compiler"
    assert tool.unit_of("nengo_onnx") == "nengo_onnx"
