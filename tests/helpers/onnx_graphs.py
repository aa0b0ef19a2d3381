"""ONNX graphs for tests: the right input and metadata around heads of our choosing (needs `onnx`)."""

from __future__ import annotations

from facemask_sdk.spec import METADATA_KEY


def constant_heads_model(
    source_onnx,
    path,
    dtype: str = "float",
    sizes: tuple[int, int] | None = None,
    dynamic: bool = False,
    size_names: tuple[str | None, str | None] = ("height", "width"),
):
    """An ONNX with the metadata of `source_onnx` (a 256 px input: the tiny test model's size, unless `dynamic`)
    whose heads are the input's mean, expanded to
    [1, anchors, 3] and [1, anchors, 4] (or to `sizes` = (anchors, box width) for a wrong graph); `dynamic`:
    the input size and the anchor count are symbolic, as in a dynamic-size export (the input's height and width
    named `size_names`; None leaves a dimension unnamed)."""
    import onnx
    from onnx import TensorProto, helper

    from facemask_sdk.anchors import generate_anchors
    from facemask_sdk.spec import ModelSpec

    INT64 = TensorProto.INT64
    element = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[dtype]
    source = onnx.load(str(source_onnx))
    spec_json = {p.key: p.value for p in source.metadata_props}[METADATA_KEY]
    anchors = len(generate_anchors(ModelSpec.from_json(spec_json)))
    rows, width = sizes or (anchors, 4)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),  # mean over everything -> scalar
        helper.make_node("Constant", [], ["logits_shape"], value=helper.make_tensor("s1", INT64, [3], [1, rows, 3])),
        helper.make_node("Constant", [], ["boxes_shape"], value=helper.make_tensor("s2", INT64, [3], [1, rows, width])),
        helper.make_node("Expand", ["mean", "logits_shape"], ["logits"]),
        helper.make_node("Expand", ["mean", "boxes_shape"], ["boxes"]),
    ]
    if dynamic:  # as many rows as the input is high: a count no shape inference knows before running
        constants = {"one": 1, "two": 2, "three": 3, "width": width}
        nodes = [
            *(
                helper.make_node("Constant", [], [name], value=helper.make_tensor(name, INT64, [1], [value]))
                for name, value in constants.items()
            ),
            nodes[0],
            helper.make_node("Shape", ["images"], ["input_shape"]),
            helper.make_node("Slice", ["input_shape", "two", "three"], ["height"]),
            helper.make_node("Concat", ["one", "height", "three"], ["logits_shape"], axis=0),
            helper.make_node("Concat", ["one", "height", "width"], ["boxes_shape"], axis=0),
            *nodes[3:],
        ]
    graph = helper.make_graph(
        nodes,
        "constant-heads",
        [helper.make_tensor_value_info("images", element, [1, 3, *size_names] if dynamic else [1, 3, 256, 256])],
        [
            helper.make_tensor_value_info("logits", element, [1, "anchors" if dynamic else rows, 3]),
            helper.make_tensor_value_info("boxes", element, [1, "anchors" if dynamic else rows, width]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=METADATA_KEY, value=spec_json)
    onnx.save(model, str(path))
    return path, anchors
