"""The package's layers (tests/layout.py): no import circle, lazy and type-only imports counted;
every import goes down the declared layers; the module map in the README and
docs/architecture.md is the one the tree gives."""
import ast

import layout
import pytest


def test_the_import_graph_has_no_circle_counting_lazy_and_type_checking_imports():
    assert layout.circles(layout.import_graph()) == []


def test_the_graph_walker_sees_a_circle_closed_by_a_lazy_import(tmp_path):
    pkg = tmp_path / layout.PKG
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    graph = layout.import_graph(tmp_path)
    assert graph[f"{layout.PKG}.sub.b"] == {f"{layout.PKG}.a"}
    assert layout.circles(graph) == [[f"{layout.PKG}.a", f"{layout.PKG}.sub.b"]]


def test_every_import_goes_down_the_layers_and_every_unit_is_placed():
    graph = layout.import_graph()
    assert {layout.unit(m) for m in graph} <= set(layout.ORDER)
    assert layout.upward_imports(graph) == []


def test_every_module_says_what_it_is():
    assert [m for m, f in layout.modules().items() if not ast.get_docstring(ast.parse(f.read_text()))] == []


@pytest.mark.parametrize("doc", layout.DOCS)
def test_the_module_map_in_the_docs_is_the_one_the_tree_gives(doc):
    text = (layout.ROOT / doc).read_text()
    assert layout.generated() in text, f"{doc} is stale: run `python tests/layout.py --write`"


def test_the_layer_diagram_in_the_architecture_page_is_the_one_the_graph_gives():
    assert layout.layer_lines() in (layout.ROOT / "docs/architecture.md").read_text(), \
        "docs/architecture.md's layer diagram is stale: paste `python tests/layout.py`'s diagram"
