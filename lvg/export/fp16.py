"""fp32 ONNX graph -> fp16 ONNX graph with fp32 IO and the numerically sensitive parts kept in fp32.

Approach (decided): convert the *graph* after export, not the torch model. Tracing a ``.half()`` model
through the TorchScript exporter produces mixed-type nodes (SDPA and LayerNorm disagree on dtypes) that
ONNX Runtime refuses, while the converter shipped with ONNX Runtime
(``onnxruntime.transformers.float16``, a maintained copy of onnxconverter-common's, so no extra
dependency) rewrites types consistently and lets us block what must stay fp32:

- by op type (:data:`FP32_OPS`): ``LayerNormalization`` (statistics of sums of squares overflow /
  lose bits in fp16; TensorRT warns about fp16 LayerNorm for the same reason), ``Softmax`` (attention
  probabilities), ``ReduceMean`` / ``ReduceSum``, ``InstanceNormalization`` (GroupNorm's statistics),
  ``Sigmoid`` (Eq. 9's probabilities), ``ArgMax`` / ``OneHot`` / ``TopK`` (subject selection);
- by module (:data:`FP32_SCOPES`): the whole visual concept injector (the target-patch threshold
  ``score >= mean(score)`` is a comparison that flips under fp16 rounding; concept and attribute
  softmaxes) and the latent-expression initializer (argmax subject selection).

Graph inputs and outputs stay float32 (``keep_io_types``), so callers never see fp16. After conversion
a peephole pass removes ``fp32 -> fp16 -> fp32`` cast pairs that the converter leaves between two fp32
regions (for example between ``Sigmoid`` and ``ReduceMean``, or before the ``prob`` output), which would
otherwise round the probability map to fp16 precision for nothing.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = ["FP32_OPS", "FP32_SCOPES", "convert_to_fp16", "fp32_node_names"]

FP32_OPS = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "InstanceNormalization",
    "Sigmoid",
    "ArgMax",
    "OneHot",
    "TopK",
    "Range",
    "CumSum",
)

#: Node-name fragments (the TorchScript exporter names nodes by module path) kept fp32 entirely.
FP32_SCOPES = ("/concept_injectors.", "/latent_init/", "/subject_distributor/")


def fp32_node_names(model) -> list[str]:
    """Names of the nodes under :data:`FP32_SCOPES`."""
    return [n.name for n in model.graph.node if any(s in n.name for s in FP32_SCOPES)]


def _drop_cast_round_trips(model) -> int:
    """Rewire ``Cast(to=fp16)`` -> ``Cast(to=fp32)`` pairs to read the fp32 source; returns pairs removed.

    Only casts the converter created after a blocked (fp32) node are considered (their names end in
    ``_cast_to_fp16_node``), so their input is known to be fp32 and skipping both casts is exact.
    """
    from onnx import TensorProto

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def cast_to(node) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    removed = 0
    for node in graph.node:
        if cast_to(node) != TensorProto.FLOAT:
            continue
        src = producer.get(node.input[0])
        if src is None or cast_to(src) != TensorProto.FLOAT16 or not src.name.endswith("_cast_to_fp16_node"):
            continue
        node.input[0] = src.input[0]  # a Cast fp32 -> fp32 is an exact no-op
        removed += 1
    # Dead-node elimination: the fp16 casts whose only readers were rewired.
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        used = {name for node in graph.node for name in node.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) != len(graph.node):
            del graph.node[:]
            graph.node.extend(keep)
            changed = True
    return removed


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so every node follows its producers (the converter appends its casts last)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def convert_to_fp16(model):
    """Return an fp16 copy of an fp32 ``onnx.ModelProto`` (see the module docstring for what stays fp32)."""
    import copy

    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src = copy.deepcopy(model)
    converted = convert_float_to_float16(
        src,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
        node_block_list=fp32_node_names(src),
    )
    _drop_cast_round_trips(converted)
    _topological_sort(converted.graph)
    # Value infos written by the converter may now describe removed tensors; drop stale ones.
    live = {name for node in converted.graph.node for name in (*node.input, *node.output)}
    stale = [vi for vi in converted.graph.value_info if vi.name not in live]
    for vi in stale:
        converted.graph.value_info.remove(vi)
    return converted
