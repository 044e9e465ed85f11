"""The Keras-book examples: each is its Keras 3 twin (in its docstring) with other imports.

Nothing is trained here; the examples' code is parsed, and their imports are resolved (the Keras
twin's only when Keras is installed).
"""

import ast
import importlib
import os
import textwrap
import warnings
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KERAS_EXAMPLES = ["chollet_simple_rnn.py", "chollet_stacked_simple_rnn.py"]
TWIN_MARKER = "The Keras 3 twin"


def _parts(path):
    """``(imports, body)`` of the example and of its twin: ``{(module, name)}`` and the ASTs of
    every other statement (the module docstring left out)."""
    source = path.read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=False)
    assert doc and TWIN_MARKER in doc, f"{path.name}: no '{TWIN_MARKER}' block in the docstring"
    twin = doc[doc.index(TWIN_MARKER):].split("::", 1)[1]
    twin_tree = ast.parse(textwrap.dedent(twin))
    return _split(tree.body[1:]), _split(twin_tree.body)


def _split(statements):
    imports, body = set(), []
    for node in statements:
        if isinstance(node, ast.ImportFrom):
            imports |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            imports |= {(alias.name, None) for alias in node.names}
        else:
            body.append(ast.dump(node))
    return imports, body


@pytest.mark.parametrize("name", KERAS_EXAMPLES)
def test_example_differs_from_its_keras_twin_only_in_imports(name):
    (imports, body), (twin_imports, twin_body) = _parts(EXAMPLES / name)
    assert body == twin_body, f"{name}: its code (imports aside) differs from the Keras twin's"
    assert twin_imports and all(module.split(".")[0] == "keras" for module, _ in twin_imports)
    renamed = {(module.replace("keras", "fastrnn", 1), item) for module, item in twin_imports}
    assert imports == renamed, f"{name}: the imports are not the twin's with keras -> fastrnn"


def _resolve(imports):
    for module, item in sorted(imports):
        mod = importlib.import_module(module)
        if item is not None and not hasattr(mod, item):
            importlib.import_module(f"{module}.{item}")      # a submodule, e.g. sequence


@pytest.mark.parametrize("name", KERAS_EXAMPLES)
def test_example_imports_resolve(name):
    (imports, _), _ = _parts(EXAMPLES / name)
    _resolve(imports)


@pytest.mark.parametrize("name", KERAS_EXAMPLES)
def test_keras_twin_imports_resolve(name):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if os.environ["KERAS_BACKEND"] == "jax":
            pytest.importorskip("jax")
        pytest.importorskip("keras")
        _, (twin_imports, _) = _parts(EXAMPLES / name)
        _resolve(twin_imports)
