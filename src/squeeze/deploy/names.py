"""Short tensor and node names for shipped ONNX files.

The legacy exporter names every tensor after its module scope (``/body/body.3/conv1/Conv_output_0``) and
ORT's QDQ inserter appends suffixes (``..._QuantizeLinear_Output``, ``..._zero_point``); each name is
stored once per producer and once per consumer. On a small network that is a large share of the file
(measured: 36 KB of a 256 KB int8 ``edsr-x2``). Squeeze needs the scope names only while exporting (to
find each quantized layer's node), so the final artifact renames every internal tensor ``t<i>`` and
every node ``n<i>``. The graph's input and output names (what callers feed and fetch) are kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _has_subgraph(graph: Any) -> bool:
    return any(a.g.ByteSize() or len(a.graphs) for n in graph.node for a in n.attribute)


def compact_names(model: Any) -> bool:
    """Rename the internal tensors and the nodes of ``model`` (an ``onnx.ModelProto``) in place.

    Returns False (and changes nothing) for graphs with control-flow subgraphs, whose bodies may refer
    to outer names. Doc strings are dropped too: they repeat the torch source lines.
    """
    graph = model.graph
    if _has_subgraph(graph):
        return False
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return new.setdefault(name, f"t{len(new)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.doc_string = ""
        for j, name in enumerate(node.input):
            node.input[j] = short(name)
        for j, name in enumerate(node.output):
            node.output[j] = short(name)
    for info in graph.value_info:
        info.name = short(info.name)
    graph.doc_string = ""
    return True


def compact_file(path: str | Path) -> bool:
    """:func:`compact_names` on an ONNX file, rewritten in place (callers hold it under an atomic path)."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(path))
    if not compact_names(model):
        return False
    onnx.save(model, str(path))
    return True
