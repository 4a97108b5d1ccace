"""The worked examples in docs/examples run (``--quick``) and write their figures."""

import importlib.util
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "examples"
)


def figures(name):
    """The ``FIGURES`` that example ``name`` says it writes."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", os.path.join(EXAMPLES, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FIGURES


@pytest.mark.parametrize(
    "name", ["from_nengo", "from_onnx", "spiking_digits", "from_any_framework"]
)
def test_example_runs_and_writes_its_plots(name, tmp_path):
    expected = figures(name)
    assert expected and all(f.endswith(".png") for f in expected)
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, f"{name}.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for figure in expected:
        path = tmp_path / figure
        assert path.is_file() and path.stat().st_size > 1000, figure
    # each page shows the figures its script writes
    with open(os.path.join(EXAMPLES, f"{name}.md")) as f:
        page = f.read()
    assert all(figure in page for figure in expected)
