"""Piper's ONNX graph with its 1-D convolutions written as 2-D ones, which onnxruntime runs on faster kernels.

onnxruntime's CPU provider computes a 1-D Conv as im2col + GEMM, but gives 2-D ones with float weights its
blocked NCHWc layout and direct AVX2/AVX-512 kernels. A Conv1d over (N, C, T) equals a Conv2d over
(N, C, 1, T) with a (1, k) kernel, so each such node becomes Unsqueeze -> Conv (2-D) -> Squeeze: the same sums
in another order (samples equal to float rounding); Piper's model then costs ~15-25% less CPU
(bench/piper_quant.py). Quantized convolutions (weights behind a DequantizeLinear) are left as they are.
"""

from __future__ import annotations

from typing import Any

AXIS: str = "liveavatar_axis_2"
"""Name of the constant [2] that the inserted Unsqueeze/Squeeze nodes share."""


def convs_as_2d(model: Any) -> int:
    """Rewrite every 1-D Conv of `model` (an onnx.ModelProto, in place) whose weight is a constant; the count."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if weight is None or len(weight.dims) != 3 or attributes.get("auto_pad", b"NOTSET") != b"NOTSET":
            nodes.append(node)
            continue
        kernel = numpy_helper.to_array(weight)
        flat = f"{node.name}/as_2d"
        graph.initializer.append(numpy_helper.from_array(kernel[:, :, None, :], f"{weight.name}/as_2d/{rewritten}"))
        pads = list(attributes.get("pads", [0, 0]))
        conv = helper.make_node(
            "Conv",
            [f"{flat}/input", f"{weight.name}/as_2d/{rewritten}", *node.input[2:]],
            [f"{flat}/output"],
            name=node.name,
            kernel_shape=[1, kernel.shape[2]],
            dilations=[1, *attributes.get("dilations", [1])],
            strides=[1, *attributes.get("strides", [1])],
            pads=[0, pads[0], 0, pads[1]],
            group=attributes.get("group", 1),
        )
        nodes.append(helper.make_node("Unsqueeze", [node.input[0], AXIS], [f"{flat}/input"], name=f"{flat}/unsqueeze"))
        nodes.append(conv)
        nodes.append(helper.make_node("Squeeze", [f"{flat}/output", AXIS], list(node.output), name=f"{flat}/squeeze"))
        rewritten += 1
    if rewritten:
        graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), AXIS))
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for node in graph.node for name in node.input}
        kept = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten
