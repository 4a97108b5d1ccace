"""The public API: what the docs tell users to use exists, and is what the package exports."""

import importlib
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import nengo_onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_DOC = os.path.join(ROOT, "docs", "api.md")


def resolve(dotted):
    """The object a dotted name refers to (importing modules on the way), or raise."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def documented_names():
    with open(API_DOC) as f:
        text = f.read()
    return sorted(set(re.findall(r"nengo_onnx(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))), text


def all_modules():
    names = ["nengo_onnx"]
    for info in pkgutil.walk_packages(nengo_onnx.__path__, "nengo_onnx."):
        names.append(info.name)
    return names


def test_every_public_name_is_documented_and_exists():
    _, text = documented_names()
    for name in nengo_onnx.__all__:
        assert getattr(nengo_onnx, name) is not None
        if name != "__version__":
            assert re.search(rf"\b{name}\b", text), f"nengo_onnx.{name} is not in docs/api.md"
    # the errors users catch are top-level names
    for name in ("ExportError", "ParamsMismatchError"):
        assert name in nengo_onnx.__all__
        assert issubclass(getattr(nengo_onnx, name), Exception)


def test_every_documented_name_exists():
    names, _ = documented_names()
    assert names
    for dotted in names:
        resolve(dotted)


def test_dir_lists_the_public_names():
    assert set(nengo_onnx.__all__) <= set(dir(nengo_onnx))
    with pytest.raises(AttributeError, match="no attribute"):
        nengo_onnx.not_a_name  # noqa: B018


@pytest.mark.parametrize("module", all_modules())
def test_all_lists_public_names_only(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    if exported is None:
        return
    for name in exported:
        assert not name.startswith("_") or name == "__version__", f"{module}: {name}"
        assert hasattr(mod, name), f"{module}.__all__ names {name}, which it lacks"


def test_package_import_needs_no_nengo():
    """``nengo-onnx run`` and exported models' runner work without nengo."""
    code = (
        "import sys, nengo_onnx; import nengo_onnx.exporting.runner; print('nengo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
