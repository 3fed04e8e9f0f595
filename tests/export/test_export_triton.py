"""Triton config.pbtxt: exact text, and parsed back with protobuf against Triton's ModelConfig field names."""

from __future__ import annotations

import pytest

from algan.export.triton import TritonModel, render_config, write_model

EXPECTED = """name: "algan"
platform: "onnxruntime_onnx"
max_batch_size: 16
input [
  {
    name: "images"
    data_type: TYPE_UINT8
    format: FORMAT_NHWC
    dims: [ 224, 224, 3 ]
  }
]
output [
  {
    name: "scores"
    data_type: TYPE_FP32
    dims: [ 1 ]
    reshape: { shape: [ ] }
  }
]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 2000
}
"""


def _model_config_class():
    """A subset of inference.ModelConfig (triton-inference-server/common protobuf/model_config.proto), with the
    proto's field names and enum values, so text_format rejects anything Triton would not parse."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="mc_subset.proto", package="inference", syntax="proto3")
    dt = fd.enum_type.add(name="DataType")
    for i, n in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                           "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32"]):
        dt.value.add(name=n, number=i)

    def field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None):
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name

    rs = fd.message_type.add(name="ModelTensorReshape")
    field(rs, "shape", 1, F.TYPE_INT64, F.LABEL_REPEATED)
    mi = fd.message_type.add(name="ModelInput")
    fmt = mi.enum_type.add(name="Format")
    for i, n in enumerate(["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"]):
        fmt.value.add(name=n, number=i)
    field(mi, "name", 1, F.TYPE_STRING)
    field(mi, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(mi, "format", 3, F.TYPE_ENUM, type_name=".inference.ModelInput.Format")
    field(mi, "dims", 4, F.TYPE_INT64, F.LABEL_REPEATED)
    field(mi, "reshape", 5, F.TYPE_MESSAGE, type_name=".inference.ModelTensorReshape")
    mo = fd.message_type.add(name="ModelOutput")
    field(mo, "name", 1, F.TYPE_STRING)
    field(mo, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(mo, "dims", 3, F.TYPE_INT64, F.LABEL_REPEATED)
    field(mo, "reshape", 5, F.TYPE_MESSAGE, type_name=".inference.ModelTensorReshape")
    db = fd.message_type.add(name="ModelDynamicBatching")
    field(db, "preferred_batch_size", 1, F.TYPE_INT32, F.LABEL_REPEATED)
    field(db, "max_queue_delay_microseconds", 2, F.TYPE_UINT64)
    mc = fd.message_type.add(name="ModelConfig")
    field(mc, "name", 1, F.TYPE_STRING)
    field(mc, "platform", 2, F.TYPE_STRING)
    field(mc, "max_batch_size", 4, F.TYPE_INT32)
    field(mc, "input", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInput")
    field(mc, "output", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelOutput")
    field(mc, "dynamic_batching", 11, F.TYPE_MESSAGE, type_name=".inference.ModelDynamicBatching")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def test_config_text_is_exact_and_parses_as_model_config(tmp_path):
    from google.protobuf import text_format

    model = TritonModel("algan", "onnxruntime_onnx", tmp_path / "m.onnx", (224, 224), 16, (16, 8, 8))
    text = render_config(model)
    assert text == EXPECTED
    cfg = text_format.Parse(text, _model_config_class()())
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("algan", "onnxruntime_onnx", 16)
    assert list(cfg.input[0].dims) == [224, 224, 3] and cfg.input[0].data_type == 2 and cfg.input[0].format == 1
    out = cfg.output[0]
    assert out.data_type == 11 and list(out.dims) == [1] and out.HasField("reshape") and list(out.reshape.shape) == []
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000


def test_write_model_lays_out_a_repository_and_replaces_atomically(tmp_path):
    src = tmp_path / "model.plan"
    src.write_bytes(b"engine-1")
    repo = tmp_path / "repo"
    m = TritonModel("algan", "tensorrt_plan", src, (64, 64), 8, (4, 8), 500)
    d = write_model(repo, m)
    assert (d / "1" / "model.plan").read_bytes() == b"engine-1"
    assert 'platform: "tensorrt_plan"' in (d / "config.pbtxt").read_text()
    src.write_bytes(b"engine-2")
    write_model(repo, m)
    assert (d / "1" / "model.plan").read_bytes() == b"engine-2"
    assert sorted(p.name for p in repo.iterdir()) == ["algan"]  # no temporary or old directories left


def test_invalid_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="preferred batch sizes"):
        TritonModel("algan", "onnxruntime_onnx", tmp_path / "x", (64, 64), 8, (16,))
    with pytest.raises(ValueError, match="platform"):
        TritonModel("algan", "pytorch_libtorch", tmp_path / "x", (64, 64), 8)
    with pytest.raises(ValueError, match="name"):
        TritonModel("a/b", "onnxruntime_onnx", tmp_path / "x", (64, 64), 8)
    with pytest.raises(FileNotFoundError):
        write_model(tmp_path / "repo", TritonModel("algan", "onnxruntime_onnx", tmp_path / "missing.onnx", (64, 64), 8))


def test_patch_graph_declares_anomaly_maps(tmp_path):
    from google.protobuf import text_format
    from test_engine_build import MH, MW, write_bundle

    bundle = write_bundle(tmp_path / "b")
    d = write_model(tmp_path / "repo", TritonModel("algan", "onnxruntime_onnx", bundle / "model.onnx", (8, 6), 8))
    cfg = text_format.Parse((d / "config.pbtxt").read_text(), _model_config_class()())
    assert [o.name for o in cfg.output] == ["scores", "anomaly_maps"]
    assert list(cfg.output[1].dims) == [MH, MW] and cfg.output[1].data_type == 11
    plain = write_bundle(tmp_path / "p", maps=False)
    d = write_model(tmp_path / "repo", TritonModel("plain", "onnxruntime_onnx", plain / "model.onnx", (8, 6), 8))
    assert [o.name for o in text_format.Parse((d / "config.pbtxt").read_text(), _model_config_class()()).output] \
        == ["scores"]
