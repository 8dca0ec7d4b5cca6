"""Short names in shipped ONNX files: same outputs, graph input/output names kept, smaller file."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from squeeze.deploy.latency import ort_session
from squeeze.deploy.names import compact_file, compact_names
from squeeze.deploy.onnx_export import INPUT, OUTPUT, export_float, quantize_int8_dynamic


def _run(path, x: torch.Tensor) -> np.ndarray:
    return ort_session(path, threads=1).run(None, {INPUT: x.numpy()})[0]


def test_compacted_float_file_computes_the_same(tiny_vit, tmp_path) -> None:
    x = torch.randn(4, 1, 16, 16)
    path = export_float(tiny_vit, x[:1], tmp_path / "f.onnx")
    before, size = _run(path, x), path.stat().st_size
    long_names = {n.name for n in onnx.load(str(path)).graph.node}
    assert compact_file(path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [INPUT] and [o.name for o in graph.output] == [OUTPUT]
    assert all(n.name == f"n{i}" for i, n in enumerate(graph.node)) and not long_names & {n.name for n in graph.node}
    inner = {t for n in graph.node for t in [*n.input, *n.output]} - {INPUT, OUTPUT, ""}
    assert inner and all(t.startswith("t") and t[1:].isdigit() for t in inner)
    assert path.stat().st_size < size
    np.testing.assert_array_equal(_run(path, x), before)


def test_quantized_files_ship_short_names(tiny_vit, tmp_path) -> None:
    x = torch.randn(4, 1, 16, 16)
    fp32 = export_float(tiny_vit, x[:1], tmp_path / "f.onnx")
    quantize_int8_dynamic(fp32, tmp_path / "d.onnx")
    graph = onnx.load(str(tmp_path / "d.onnx")).graph
    assert {"DynamicQuantizeLinear"} <= {n.op_type for n in graph.node}
    assert all(n.name.startswith("n") for n in graph.node)
    assert np.isfinite(_run(tmp_path / "d.onnx", x)).all()


def test_graphs_with_subgraphs_are_left_alone() -> None:
    body = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["a"], ["b"])], "body", [], [])
    node = onnx.helper.make_node("If", ["cond"], ["out"], then_branch=body, else_branch=body, name="keep")
    graph = onnx.helper.make_graph([node], "g", [], [])
    model = onnx.helper.make_model(graph)
    assert not compact_names(model)
    assert model.graph.node[0].name == "keep"
