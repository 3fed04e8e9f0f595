"""Bundle verification for the edge daemon and ``algan-edge check-config`` (torch-free: json, safetensors).

A model bundle records its own integrity: ``algan.json`` holds the ``format_version``, the ``model_id`` and, once
exported, ``exports.onnx.sha256`` / ``exports.onnx_fp16.sha256`` (written by ``algan-export``, see
:mod:`algan.export.pipeline`); every exported graph carries ``algan.model_id`` in its ONNX ``metadata_props``
(:mod:`algan.contract.metadata`). :func:`verify_model` checks, before the daemon loads a runner:

1. ``algan.json`` is readable JSON of a supported ``format_version`` (a corrupt manifest is refused: the daemon
   cannot know the bundle's calibration, so it would score "as exported" with a threshold nobody chose);
2. the graph the daemon will load has the sha256 the manifest recorded for it (a ``model.onnx`` copied from another
   bundle, or re-written by hand, is refused instead of being taken for a re-calibration);
3. the graph's ``algan.model_id`` equals the manifest's ``model_id``;
4. ``weights.safetensors`` is a complete safetensors file (``safetensors.safe_open`` reads its header; the tensors'
   ``data_offsets`` must cover the file) (a truncated file, or a pickle renamed to ``.safetensors``, is
   refused even though the edge never reads the weights).

5. a TensorRT engine (``model.engine``) was built from the bundle's current graph: its sidecar's ``onnx_sha256``
   equals the sha256 of the ``onnx_file`` it names (``model.onnx`` or ``model.fp16.onnx``) in the bundle; an engine
   built before the bundle was re-exported is refused as stale, with the ``algan-edge build-engine`` command that
   rebuilds it (:func:`check_engine_source`, also a ``FAIL`` line of ``algan-edge doctor``).

Each failure is a :class:`~algan.edge.errors.ModelError` (exit status 2) of one line naming the file and the fix.
A bare ``.onnx``/``.engine`` file outside a bundle (no ``algan.json`` beside it) is not checked. The engine itself is
not hashed here: its JSON sidecar is checked by :mod:`algan.runtime.runners.tensorrt` against the GPU and TensorRT.
Bundles exported before the hashes were recorded (no ``exports.onnx.sha256``) pass checks 2 with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algan.contract import (
    EXPORT_KEYS,
    KEY_MODEL_ID,
    MANIFEST_FILE,
    ONNX_FILE,
    SIGNATURE_FILE,
    WEIGHTS_FILE,
    BundleError,
    EngineSidecar,
    Manifest,
    file_sha256,
    load_manifest,
)
from algan.runtime.errors import ModelError
from algan.runtime.signing import SignatureError, verify_bundle_signature

log = logging.getLogger(__name__)



class BundleCheckError(ModelError):
    """A bundle that fails its own integrity record (exit status 2: a user must restore or re-export it)."""

    exit_code = 2


def _who() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"


def unreadable(path: Path, e: OSError) -> BundleCheckError:
    """The one-line error for a bundle file the daemon cannot open, naming the user it runs as."""
    if isinstance(e, PermissionError):
        return BundleCheckError(
            f"cannot read {path}: permission denied for user {_who()}; make the bundle readable "
            f"(chmod -R a+rX {path.parent}) or run the daemon as its owner")
    return BundleCheckError(f"cannot read {path} ({e.strerror or e}); restore the bundle or fix the 'model' path")


def graph_sha256(path: Path) -> str:
    """Hex sha256 of a file (:func:`algan.contract.file_sha256`).

    Raises:
        BundleCheckError: the file cannot be read.
    """
    try:
        return file_sha256(path)
    except OSError as e:
        raise unreadable(path, e) from None


#: first bytes of files that are not safetensors but are often renamed to it (pickle protocols 2-5, zip: torch.save)
FOREIGN_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK")


def check_weights(path: Path) -> None:
    """Check that ``path`` is a complete safetensors file without loading its tensors (and without torch):
    ``safetensors.safe_open`` validates the header and that the tensors' ``data_offsets`` cover the file exactly.

    Raises:
        BundleCheckError: unreadable, not safetensors (e.g. a pickle), or truncated.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with path.open("rb") as f:
            head = f.read(2)
        with safe_open(str(path), framework="numpy"):
            pass
    except OSError as e:
        raise unreadable(path, e) from None
    except SafetensorError as e:
        why = str(e).removeprefix("Error while deserializing header: ")
        if head in FOREIGN_MAGIC:
            raise _bad_weights(path, f"a pickle or another format, not safetensors ({why})") from None
        if "not fully covered" in why or "incomplete" in why:
            raise _bad_weights(path, f"truncated: {why}") from None
        raise _bad_weights(path, f"not safetensors: {why}") from None


def _bad_weights(path: Path, why: str) -> BundleCheckError:
    return BundleCheckError(f"{path} is damaged ({why}); copy the bundle again from where it was trained, or "
                            "re-train it")


def regular_file(bundle: Path, path: Path) -> Path:
    """``path`` (a file of ``bundle``) unchanged when it is a regular file inside the bundle directory, or absent
    (the caller reports a missing file). A bundle is copied from machine to machine as plain files: a symbolic link
    in it would make the daemon open whatever it points to (``weights.safetensors -> /etc/shadow``).

    Raises:
        BundleCheckError: a symbolic link, not a regular file (directory, FIFO, device), or outside the bundle; one
            line naming the file, never its contents.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise unreadable(path, e) from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleCheckError(f"{path} is a symbolic link; a bundle holds regular files only: replace it with a "
                               "copy of the file (cp --dereference) or re-run algan-export")
    if not stat.S_ISREG(st.st_mode):
        raise BundleCheckError(f"{path} is not a regular file (a directory, FIFO or device); a bundle holds regular "
                               "files only: copy the bundle again")
    if path.resolve().parent != bundle.resolve():
        raise BundleCheckError(f"{path} is outside the bundle directory {bundle}; copy the bundle again")
    return path


def bundle_dir_of(model: Path) -> Path | None:
    """The bundle directory of a configured model (the directory itself, or the directory of a file inside a bundle),
    or ``None`` for a bare model file without an ``algan.json`` beside it."""
    if model.is_dir():
        return model
    return model.parent if (model.parent / MANIFEST_FILE).exists() else None


def bundle_manifest(bundle: Path) -> Manifest:
    """``algan.json`` of a bundle, read as the runtime reads it (:func:`algan.contract.load_manifest` with
    ``lenient=True``: the training sections are not needed to serve the graph).

    Raises:
        BundleCheckError: missing, unreadable, invalid, or an unsupported ``format_version``.
    """
    path = regular_file(bundle, bundle / MANIFEST_FILE)
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise BundleCheckError(f"{bundle} is not a model bundle ({MANIFEST_FILE} missing); set 'model' to a bundle "
                               "from algan-train/algan-export or to a .onnx file") from None
    except OSError as e:
        raise unreadable(path, e) from None
    try:
        return load_manifest(path, lenient=True)
    except BundleError as e:
        raise BundleCheckError(str(e)) from None


def manifest_input_size(manifest: Manifest) -> tuple[int, int] | None:
    """``(H, W)`` in pixels the manifest says the model takes: ``input.height``/``input.width``, else
    ``backbone.input_size`` ``[H, W]``, else a pixel model's ``head.settings.size``; ``None`` when it says none of
    them (or says it in a form not understood)."""
    size: list | None = None
    if manifest.input is not None:
        size = [manifest.input.height, manifest.input.width]
    elif manifest.backbone is not None:
        size = list(manifest.backbone.input_size)
    elif manifest.head is not None and manifest.variant == "image":
        side = manifest.head.settings.get("size")
        size = [side, side] if side is not None else None
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return None
    return int(size[0]), int(size[1])


#: Largest tensor a graph may create from a constant shape (bytes): loading or running one bigger would exhaust the
#: device's memory (the models of this project create none over a few MB).
MAX_CONSTANT_BYTES = 1 << 30


def huge_constant(model: Any) -> str | None:
    """Why an ``onnx.ModelProto`` would allocate more than :data:`MAX_CONSTANT_BYTES` for one tensor: a
    ``ConstantOfShape`` whose shape is an initializer (ONNX Runtime folds it at session creation), or an initializer
    declaring such dimensions; ``None`` when it does not."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        if n * 4 > MAX_CONSTANT_BYTES and init.data_location != 1:  # external data is sized by its file
            return f"declares initializer {init.name!r} of shape {list(init.dims)} (more than 1 GiB)"
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or not node.input or node.input[0] not in inits:
            continue
        shape = [int(v) for v in numpy_helper.to_array(inits[node.input[0]]).reshape(-1)]
        n = 1
        for v in shape:
            n *= max(v, 0)
        value = next((a for a in node.attribute if a.name == "value"), None)
        size = helper.tensor_dtype_to_np_dtype(value.t.data_type).itemsize if value is not None else 4
        if n * size > MAX_CONSTANT_BYTES:
            return (f"creates a tensor of shape {shape} ({n * size / 2**30:.1f} GiB) with ConstantOfShape node "
                    f"{node.name or node.output[0]!r}")
    return None


def graph_model_id(path: Path) -> str | None:
    """The ``algan.model_id`` in an ONNX graph's metadata (``onnx`` package, else ONNX Runtime without graph
    optimizations); ``None`` if absent. With ``onnx``, a graph that would allocate a huge constant
    (:func:`huge_constant`) is refused.

    Raises:
        BundleCheckError: the file cannot be parsed as ONNX, or creates a huge constant.
    """
    try:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError and friends
            raise BundleCheckError(f"{path} is not a readable ONNX graph ({str(e)[:120]}); re-run algan-export") \
                from None
        huge = huge_constant(model)
        if huge is not None:
            raise BundleCheckError(f"{path} {huge}; this is not a graph algan-export writes: re-run algan-export")
        return {p.key: p.value for p in model.metadata_props}.get(KEY_MODEL_ID)
    except ImportError:
        pass
    from algan.runtime.runners.calibration import read_graph_metadata

    try:
        return read_graph_metadata(path).get(KEY_MODEL_ID)  # ONNX Runtime, without graph optimizations
    except ValueError as e:
        raise BundleCheckError(f"{path} is not a readable ONNX graph ({str(e)[:160]}); re-run algan-export") from None


def sidecar_path(engine: Path) -> Path:
    """The sidecar JSON of a TensorRT engine: ``model.engine.json`` if present, else ``model.json``."""
    full = engine.with_name(engine.name + ".json")
    return full if full.is_file() or not engine.with_suffix(".json").is_file() else engine.with_suffix(".json")


#: ``algan-edge build-engine`` flag that rebuilds an engine of a sidecar ``precision``
REBUILD_FLAGS = {"fp16": " --fp16", "int8": " --int8", "fp32": ""}


def stale_engine(sidecar: EngineSidecar, engine: Path, current_sha256: str | None) -> str | None:
    """Why an engine no longer matches the graph it was built from, or ``None`` (pure).

    Args:
        sidecar: the engine's sidecar: ``onnx_sha256`` (hex sha256 of the graph at build time), ``onnx_file`` (that
            graph's file name in the bundle, default ``model.onnx``) and ``precision`` (for the rebuild command).
        engine: the engine file (named in the message; the graph lies beside it).
        current_sha256: hex sha256 of that graph file now, ``None`` when the bundle has no such file.

    Returns:
        One line saying the engine is stale and the command that rebuilds it; ``None`` when the hashes agree or
        there is nothing to compare (no recorded hash, no graph beside the engine).
    """
    want = sidecar.onnx_sha256
    if not want or current_sha256 is None or want == current_sha256:
        return None
    graph = engine.parent / (sidecar.onnx_file or ONNX_FILE)
    flag = REBUILD_FLAGS.get(sidecar.precision, " --fp16")
    return (f"engine {engine} is stale: it was built from a {graph.name} with sha256 {str(want)[:12]}..., but {graph} "
            f"is now {current_sha256[:12]}... (the bundle was re-exported after the engine was built); rebuild it "
            f"with algan-edge build-engine{flag} {engine.parent} on this device")


def check_engine_source(engine: Path) -> None:
    """Refuse a TensorRT engine built from another graph than the one now beside it (see :func:`stale_engine`).

    A missing or unreadable sidecar is left to the TensorRT runner, which refuses it with its own message.

    Raises:
        BundleCheckError: the engine is stale, or its graph cannot be read.
    """
    try:
        sidecar = EngineSidecar.read(sidecar_path(engine))
    except (OSError, BundleError):
        return
    graph = engine.parent / (sidecar.onnx_file or ONNX_FILE)
    current = graph_sha256(graph) if sidecar.onnx_sha256 and graph.is_file() else None
    reason = stale_engine(sidecar, engine, current)
    if reason is not None:
        raise BundleCheckError(reason)


@dataclass(frozen=True)
class BundleReport:
    """What :func:`verify_model` checked.

    Attributes:
        bundle: the bundle directory, ``None`` for a bare model file.
        model_id: the manifest's model id (``None`` without a bundle).
        graph: the model file that was checked.
        sha256_checked: whether the graph's hash was compared with a recorded one.
    """

    bundle: Path | None
    model_id: str | None
    graph: Path
    sha256_checked: bool


def verify_model(model: Path, graph: Path, trusted_keys: Sequence[str] = ()) -> BundleReport:
    """Verify the bundle of ``model`` before ``graph`` (the file a runner will load) is used.

    Args:
        model: the configured ``model`` (bundle directory or file).
        graph: the resolved model file (``model.onnx``, ``model.fp16.onnx``, ``model.engine``), or the bundle itself
            for the torch backend.
        trusted_keys: public keys (``ed25519:<base64>``, ``model.trusted_keys``); when given, the bundle must carry
            a valid signature of one of them (:func:`algan.runtime.signing.verify_bundle_signature`).

    Returns:
        A :class:`BundleReport`.

    Raises:
        BundleCheckError: one line naming the file and the fix (see the module docstring for the checks).
    """
    bundle = bundle_dir_of(model)
    if bundle is None and trusted_keys:
        raise SignatureError(f"model.trusted_keys is set, but {model} is not a model bundle (no {MANIFEST_FILE} beside "
                             "it): only a signed bundle can be trusted; set model to the bundle directory")
    if bundle is None:
        try:
            with graph.open("rb"):
                pass
        except OSError as e:
            raise unreadable(graph, e) from None
        return BundleReport(None, None, graph, False)
    manifest = bundle_manifest(bundle)
    model_id = manifest.model_id
    weights = regular_file(bundle, bundle / WEIGHTS_FILE)
    if graph != bundle and graph.parent.resolve() == bundle.resolve():
        regular_file(bundle, graph)
        if graph.suffix == ".engine":
            regular_file(bundle, sidecar_path(graph))
    if weights.exists():
        check_weights(weights)
    else:
        raise BundleCheckError(f"{weights} is missing; the bundle is incomplete: copy it again from where it was "
                               "trained")
    if trusted_keys:
        regular_file(bundle, bundle / SIGNATURE_FILE)
        kid = verify_bundle_signature(bundle, graph, trusted_keys)
        log.info("bundle %s: signature of key %s verified", bundle, kid)
    checked = False
    if graph.is_file() and graph.suffix == ".onnx":
        record = manifest.exports.graph(EXPORT_KEYS.get(graph.name, ""))
        want = record.sha256 if record is not None else None
        if want:
            got = graph_sha256(graph)
            if got != want:
                raise BundleCheckError(
                    f"{graph} is not the graph {bundle / MANIFEST_FILE} recorded (sha256 {got[:12]}... != "
                    f"{want[:12]}...): it comes from another bundle or was changed; re-run algan-export {bundle}")
            checked = True
        else:
            log.warning("%s records no sha256 for %s (exported by an older algan-export); re-export the bundle to "
                        "have it checked", bundle / MANIFEST_FILE, graph.name)
        gid = graph_model_id(graph)
        if gid is not None and gid != model_id:
            raise BundleCheckError(
                f"{graph} belongs to model {gid!r}, but {bundle / MANIFEST_FILE} is model {model_id!r}; copy the whole "
                f"bundle directory, or re-run algan-export {bundle}")
    elif graph.is_file():
        try:
            with graph.open("rb"):
                pass
        except OSError as e:
            raise unreadable(graph, e) from None
        if graph.suffix == ".engine":
            check_engine_source(graph)
    return BundleReport(bundle, model_id, graph, checked)
