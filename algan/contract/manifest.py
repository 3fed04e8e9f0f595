"""The bundle manifest ``algan.json``, typed: one pydantic model per section (:class:`Manifest`), the exports'
records (:class:`Exports`, with the TensorRT engine's :class:`EngineSidecar`), and the one reader
(:func:`load_manifest`; ``lenient=True`` for the runtime, which reads only what serving needs).

Every error is one :class:`BundleError` line naming the file, the bad field and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from algan.contract.files import atomic_write_bytes
from algan.contract.names import ENGINE_FILE, ENGINE_SIDECAR_FILE, MANIFEST_FILE, OUTPUT_NAME, WEIGHTS_FILE
from algan.contract.patch import PatchSpec

# -- the manifest ----------------------------------------------------------------------------------------
#: the bundle format version this package reads and writes (``format_version`` of the manifest)
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A model directory that is missing, incomplete or of an unsupported format."""


class _Section(BaseModel):
    """A manifest section: unknown keys are kept (``extra="allow"``: a newer writer's additions survive a read-modify-
    write), and :meth:`to_json` writes back exactly the keys that were read or set, in the order they were read
    (keys set later follow, in field order), so that a manifest round-trips to the same JSON."""

    # protected_namespaces: pydantic < 2.10 would warn about the field model_id
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    _key_order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: Any) -> Any:
        obj = handler(data)
        if isinstance(data, dict) and obj is not data:
            obj._key_order = tuple(data)
        return obj

    @model_serializer(mode="wrap")
    def _in_key_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        d = handler(self)
        first = [k for k in self._key_order if k in d]
        return {**{k: d[k] for k in first}, **{k: v for k, v in d.items() if k not in self._key_order}}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: the keys read or set (defaults of absent keys are not written)."""
        return self.model_dump(exclude_unset=True)


class BackboneSection(_Section):
    """``backbone``: what rebuilds the feature extractor (``algan.features.base.BackboneSpec``; the image variant:
    ``name: pixels`` and ``channels``). ``input_size`` is ``[H, W]``, ``mean``/``std`` the per-channel RGB
    normalisation of [0, 1] pixels."""

    name: str
    input_size: list[int]
    mean: list[float]
    std: list[float]
    blocks: list[int] | None = None
    pooling: str | None = None
    weights_sha256: str | None = None
    weights_path: str | None = None
    channels: int | None = None


class InputSection(_Section):
    """``input``: the model input, ``{height, width, layout: NHWC, dtype: uint8, colour_order: BGR}``."""

    height: int
    width: int
    layout: str = "NHWC"
    dtype: str = "uint8"
    colour_order: str = "BGR"


class FeaturesSection(_Section):
    """``features``: the fitted transform, ``transform`` (``standardize``/``pca``; patch: ``none``/``random``/``pca``;
    image: ``none``), its input and output dimension, and the number of training patches (patch variant)."""

    transform: str
    in_dim: int
    dim: int
    n_patches: int | None = None


class CandidateFigures(_Section):
    """One candidate of ``head.selection``: ``name`` (``variant:head``), its ``recall_at_fpr`` and ``auroc`` on the
    synthetic defects (against the held-out normals), the recall per defect kind and its fit time in seconds."""

    name: str
    recall_at_fpr: float
    auroc: float
    recall_by_kind: dict[str, float] = Field(default_factory=dict)
    fit_s: float | None = None


class HeadSelection(_Section):
    """``head.selection``: how ``algan-train --head auto`` chose the head (:mod:`algan.model.select`): the
    ``chosen`` candidate, the ``rule``, the ``seed`` of the synthetic defects, the ``target_fpr`` the recall is
    measured at, the held-out normals and synthetic defects scored, and every candidate's figures."""

    chosen: str
    rule: str
    seed: int
    target_fpr: float
    n_normal: int
    n_defects: int
    defect_kinds: list[str] = Field(default_factory=list)
    defects_per_image: int | None = None
    wall_s: float | None = None
    candidates: list[CandidateFigures] = Field(default_factory=list)


class HeadSection(_Section):
    """``head``: ``kind`` (``algan``, ``mahalanobis``, ``knn``; patch: ``algan``, ``patchcore``, ``padim``), the
    head's ``settings`` (the config it was trained with) and, for a head chosen by ``--head auto``, ``selection``."""

    kind: str
    settings: dict[str, Any] = Field(default_factory=dict)
    selection: HeadSelection | None = None


class CalibrationSection(_Section):
    """``calibration``: raw score ``center`` (median normal) and ``threshold`` (the alarm level), with how they were
    found; algan-calibrate adds ``date``, ``tool``, ``data``, ``validation``... (kept as extra keys).

    Patch heads add the pixel threshold: ``pixel_threshold`` (raw map units,
    :func:`algan.contract.threshold.pixel_threshold` over the maps of the same held-out normals),
    ``pixel_target_fpr`` (its per-pixel false-positive rate) and ``n_pixels`` (map cells it came from). Bundles
    written before it have none: :attr:`pixel_level` is then 1.0.
    """

    center: float
    threshold: float
    target_fpr: float | None = None
    n_images: int | None = None
    source: str | None = None
    method: str | None = None
    date: str | None = None
    pixel_threshold: float | None = None
    pixel_target_fpr: float | None = None
    n_pixels: int | None = None

    @property
    def pixel_level(self) -> float:
        """The pixel threshold on the calibrated map scale (where 1.0 is the image threshold's level):
        ``(pixel_threshold - center) / (threshold - center)``; a map cell at or above it is a defect pixel.
        Without a ``pixel_threshold`` (bundles written before it) 1.0: the image threshold's level."""
        if self.pixel_threshold is None or not self.threshold > self.center:
            return 1.0
        return (float(self.pixel_threshold) - self.center) / (self.threshold - self.center)


class TrainingDataSection(_Section):
    """``training.data``: the training data set (``algan.data.datasets.Dataset.summary``)."""

    root: str | None = None
    layout: str | None = None
    n_train: int | None = None
    n_test_normal: int | None = None
    n_test_anomalous: int | None = None
    has_masks: bool | None = None


class TrainingSection(_Section):
    """``training``: data set summary, image counts, seed and timing; ALGAN heads add ``train_s``, the ``final``
    losses and ``epochs_run``."""

    data: TrainingDataSection = Field(default_factory=TrainingDataSection)
    n_train: int | None = None
    n_holdout: int | None = None
    seed: int | None = None
    max_train: int | None = None
    wall_s: float | None = None
    train_s: float | None = None
    final: dict[str, Any] | None = None
    epochs_run: int | None = None


def _section_of(spec: type, name: str, doc: str, absent: dict[str, Any] | None = None) -> type[_Section]:
    """A manifest section with the fields, types and defaults of the dataclass ``spec`` (one definition); ``absent``
    overrides the default of a field that bundles written before it existed lack (they read as that value)."""
    hints = get_type_hints(spec)
    defs: dict[str, Any] = {f.name: (hints[f.name], (absent or {}).get(f.name, f.default))
                            for f in dataclass_fields(spec)}
    return create_model(name, __base__=_Section, __doc__=doc, __module__=__name__, **defs)


if TYPE_CHECKING:  # for type checkers: a section (its fields are PatchSpec's, made at import time below)
    class PatchSection(_Section):
        def __getattr__(self, name: str) -> Any: ...
else:
    #: ``patch``: the patch variant's :class:`algan.contract.patch.PatchSpec` (its fields and defaults)
    #: a manifest without ``map_norm`` was written before the map normalisation existed: its maps have none
    PatchSection = _section_of(PatchSpec, "PatchSection", "``patch``: the patch variant's PatchSpec (fields and "
                               "defaults of :class:`algan.contract.patch.PatchSpec`; ``map_norm`` absent = none).",
                               absent={"map_norm": "none"})


class AnomalyMapSection(_Section):
    """``anomaly_map``: size of the ``anomaly_maps`` output in cells, the image-score reduction, the patch grid, and
    the per-location normalisation of the map (``none``, ``mean``, ``standardize``) with the number of training
    images its statistics came from."""

    height: int
    width: int
    reduction: str | None = None
    grid: list[int] | None = None
    normalization: str | None = None
    normalization_images: int | None = None


class TilingSection(_Section):
    """``tiling``: the ROI is scored as a grid of tiles (:mod:`algan.runtime.tiling`): ``grid`` ``[rows, cols]`` and the
    ``overlap`` of neighbouring tiles (fraction of a tile, 0-0.5). The graph scores single tiles; the host cuts,
    stitches the maps (overlaps averaged) and reduces the stitched map to the frame score (image-only heads: the
    maximum over tiles). The calibration of a tiled bundle is on those frame scores."""

    grid: list[int]
    overlap: float = 0.25

    @model_validator(mode="after")
    def _check(self) -> TilingSection:
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid must be [rows, cols] of positive integers, got {self.grid}")
        if not 0.0 <= self.overlap <= 0.5:
            raise ValueError(f"overlap must lie in [0, 0.5], got {self.overlap}")
        return self


class GraphExport(_Section):
    """``exports.onnx`` / ``exports.onnx_fp16``: an exported graph's file, its sha256 (checked by the runtime's bundle
    verification), when it was written and its parity against torch (max |diff| over ``parity_images``)."""

    file: str
    sha256: str | None = None
    created: str | None = None
    opset: int | None = None
    simplified_with: str | None = None
    outputs: list[str] | None = None
    parity_max_abs_diff: float | None = None
    parity_max_scaled_diff: float | None = None
    parity_images: int | None = None
    parity_tolerance: float | None = None
    maps_parity_max_abs_diff: float | None = None
    fp32_backbone_blocks: int | None = None


class EngineSidecar(_Section):
    """The JSON sidecar ``model.engine.json`` of a TensorRT engine: what it was built for (TensorRT version, GPU,
    compute capability: the runner refuses an engine built elsewhere), its precision and batch profile, and the
    graph it was built from (``onnx_file`` and its ``onnx_sha256``: a stale engine is refused)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    batch_profile: dict[str, int]
    input_name: str
    output_name: str
    input_shape: list[int]
    output_names: list[str] | None = None
    strongly_typed: bool | None = None
    builder_flags: list[str] | None = None
    onnx_file: str | None = None
    onnx_sha256: str | None = None
    workspace_mib: int | None = None
    engine_sha256: str | None = None
    built_by: str | None = None
    created: str | None = None

    def text(self) -> str:
        """The sidecar file's text (2-space indented JSON and a newline)."""
        return json.dumps(self.to_json(), indent=2) + "\n"

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> EngineSidecar:
        """Read and validate a sidecar file.

        Raises:
            FileNotFoundError: no such file.
            BundleError: unreadable JSON or a missing/mistyped key (one line naming the file and the key).
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read engine sidecar {p} ({exc})") from None
        if not isinstance(data, dict):
            raise BundleError(f"engine sidecar {p} is not a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            loc, what = _first_error(exc)
            raise BundleError(f"engine sidecar {p}: key '{loc}' {what}") from None


class EngineExport(_Section):
    """``exports.engine``: the committed engine's ``file`` and ``sidecar`` file names plus the sidecar's keys
    (:class:`EngineSidecar`), or ``file: null`` with a ``note`` when an export asked for an engine it could not
    build here (no TensorRT)."""

    file: str | None = None
    sidecar: str | None = None
    note: str | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    precision: str | None = None
    onnx_file: str | None = None
    onnx_sha256: str | None = None
    engine_sha256: str | None = None
    created: str | None = None

    @classmethod
    def of(cls, sidecar: EngineSidecar) -> EngineExport:
        """The record of a committed engine: :data:`ENGINE_FILE`, :data:`ENGINE_SIDECAR_FILE` and the sidecar."""
        return cls.model_validate({"file": ENGINE_FILE, "sidecar": ENGINE_SIDECAR_FILE, **sidecar.to_json()})


class TritonExport(_Section):
    """``exports.triton``: the Triton model repository written by ``algan-export --triton-repo`` and its models."""

    repository: str | None = None
    models: list[str] = Field(default_factory=list)


class Exports(_Section):
    """``exports``, filled by algan-export (``engine`` also by ``algan-edge build-engine`` on the device): the graphs
    with their hashes, the engine, every parity result, the AUROC of the exported graph and the Triton repository."""

    onnx: GraphExport | None = None
    onnx_fp16: GraphExport | None = None
    engine: EngineExport | None = None
    parity: list[dict[str, Any]] | None = None
    auroc: Any = None
    triton: TritonExport | None = None

    def graph(self, key: str) -> GraphExport | None:
        """The record of ``key`` (``onnx`` or ``onnx_fp16``, :data:`algan.contract.names.EXPORT_KEYS`), or ``None``."""
        return {"onnx": self.onnx, "onnx_fp16": self.onnx_fp16}.get(key)

    def names(self) -> list[str]:
        """The keys this manifest records (read or set), in order."""
        return list(self.to_json())


class Manifest(_Section):
    """The bundle manifest ``algan.json`` (format version :data:`FORMAT_VERSION`).

    Required: ``format_version``, ``model_id`` and ``calibration`` (``center``, ``threshold``). The sections that
    rebuild the torch detector (``backbone``, ``features``, ``head``) are optional here, so that a bundle that only
    serves its exported graph still reads; :meth:`require` gives them where they are needed. ``exports`` is filled by
    algan-export (:class:`Exports`). ``tiling`` (:class:`TilingSection`) makes every runtime score the ROI as a
    grid of tiles with stitched maps (:mod:`algan.runtime.tiling`).
    """

    format_version: int
    model_id: str
    calibration: CalibrationSection
    created: str | None = None
    algan_edge_version: str | None = None
    variant: str = "feature"
    backbone: BackboneSection | None = None
    input: InputSection | None = None
    features: FeaturesSection | None = None
    head: HeadSection | None = None
    training: TrainingSection | None = None
    exports: Exports = Field(default_factory=Exports)
    outputs: list[str] = Field(default_factory=lambda: [OUTPUT_NAME])
    patch: PatchSection | None = None
    anomaly_map: AnomalyMapSection | None = None
    roi: list[int] | None = None
    tiling: TilingSection | None = None

    _path: Path | None = PrivateAttr(default=None)
    _partial: bool = PrivateAttr(default=False)

    @property
    def path(self) -> Path | None:
        """The file it was read from (:func:`load_manifest`), else ``None``."""
        return self._path

    def to_json(self) -> dict[str, Any]:
        """As :meth:`_Section.to_json`; ``exports`` is written once a record was set in it (also when the manifest
        read had no ``exports``)."""
        if self.exports.to_json():
            self.__pydantic_fields_set__.add("exports")
        return super().to_json()

    @property
    def head_kind(self) -> str:
        """``head.kind``, or ``""`` without a head section."""
        return self.head.kind if self.head is not None else ""

    def require(self, name: str) -> Any:
        """The section ``name`` (e.g. ``"backbone"``); raises :class:`BundleError` naming the file and the field when
        it is absent."""
        value = getattr(self, name)
        if value is None:
            raise self.field_error(name)
        return value

    def field_error(self, field: str, what: str = "is missing") -> BundleError:
        """The :class:`BundleError` for a bad ``field`` (dotted, e.g. ``head.settings.n_bank``) of this manifest."""
        return BundleError(_field_error(self._path or MANIFEST_FILE, field, what))


def _field_error(path: str | os.PathLike[str], field: str, what: str) -> str:
    return (f"{path}: field '{field}' {what}; the manifest is damaged or was not written by algan-train: re-train or "
            "re-export the bundle with this algan-edge version, or restore its algan.json")


#: sections the runtime does not read (they rebuild the torch detector or describe training): ``lenient=True``
#: drops one that fails validation instead of refusing the bundle
TRAINING_SECTIONS = ("backbone", "features", "head", "training", "patch", "created", "algan_edge_version")


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """``(dotted field, "is missing" | "is invalid: why (got x)")`` of the first error, with the count of the
    rest."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    what = "is missing" if first["type"] == "missing" else \
        f"is invalid: {first['msg'][:160]} (got {first.get('input')!r:.80})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return loc, what + more


def parse_manifest(data: Any, path: str | os.PathLike[str] = MANIFEST_FILE, *, lenient: bool = False) -> Manifest:
    """Validate a decoded ``algan.json`` (``path`` names it in errors).

    Args:
        lenient: the runtime's read: a section the runtime does not use (:data:`TRAINING_SECTIONS`) that fails
            validation is dropped (logged nowhere: the runtime never reads it) instead of refusing the bundle. The
            result cannot be written back (:func:`write_manifest` refuses it: it would lose those sections).

    Raises:
        BundleError: not a JSON object, a ``format_version`` other than :data:`FORMAT_VERSION`, or a missing or
            mistyped field (the first one is named, with the count of the others).
    """
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object (got {type(data).__name__}); re-train or restore the bundle")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path} has format version {version}, this algan-edge reads version {FORMAT_VERSION}; "
                          "re-train the model or install the algan-edge version that wrote it")
    dropped: set[str] = set()
    while True:
        try:
            manifest = Manifest.model_validate({k: v for k, v in data.items() if k not in dropped})
            break
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors(include_url=False) if e["loc"]}
            if not lenient or not bad or not bad <= set(TRAINING_SECTIONS) or bad <= dropped:
                raise BundleError(_field_error(path, *_first_error(exc))) from None
            dropped |= bad
    manifest._path = Path(path)
    manifest._partial = bool(dropped)
    return manifest


def load_manifest(path: str | os.PathLike[str], *, lenient: bool = False) -> Manifest:
    """Read and validate a bundle's manifest: ``path`` is the bundle directory or its ``algan.json``.

    Args:
        path: the bundle directory or its ``algan.json``.
        lenient: the runtime's read (see :func:`parse_manifest`).

    Raises:
        BundleError: a missing directory or manifest, a file other than ``algan.json`` given for the bundle,
            unreadable JSON, an unsupported ``format_version``, or a missing or mistyped field (see
            :func:`parse_manifest`), each as one line that says what to do.
    """
    p = Path(path)
    if p.is_file() and p.name == MANIFEST_FILE:
        model_dir, file = p.parent, p
    else:
        model_dir, file = p, p / MANIFEST_FILE
        if p.is_file():
            hint = (f"give the bundle directory {p.parent}" if (p.parent / MANIFEST_FILE).is_file() else
                    "give the bundle directory that algan-train wrote")
            raise BundleError(f"{p} is a file, but a model bundle directory is needed (with {MANIFEST_FILE} and "
                              f"{WEIGHTS_FILE}); {hint}")
        if not p.is_dir():
            raise BundleError(f"model directory {p} does not exist; train one with algan-train --out {p}")
        if not file.is_file():
            raise BundleError(f"{model_dir} is not a model bundle ({MANIFEST_FILE} missing); train one with "
                              "algan-train")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"cannot read {file}: not valid JSON at line {exc.lineno} ({exc.msg}), the bundle is "
                          "damaged; re-train or restore the bundle") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise BundleError(f"cannot read {file}: {exc}; re-train or restore the bundle") from exc
    return parse_manifest(data, file, lenient=lenient)


def manifest_bytes(manifest: Manifest) -> bytes:
    """The text of ``algan.json`` for ``manifest`` (2-space indented JSON and a newline, UTF-8)."""
    return (json.dumps(manifest.to_json(), indent=2) + "\n").encode()


def write_manifest(model_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Atomically (temp file + rename, :func:`atomic_write_bytes`) write ``model_dir/algan.json``.

    Raises:
        OSError: the bundle directory is not writable.
        BundleError: ``manifest`` was read leniently and dropped a section (writing it would lose that section).
    """
    if manifest._partial:
        raise BundleError(f"{manifest.path}: this manifest was read without its damaged training sections and cannot "
                          "be written back; restore algan.json or re-train the bundle")
    atomic_write_bytes(Path(model_dir) / MANIFEST_FILE, manifest_bytes(manifest))
