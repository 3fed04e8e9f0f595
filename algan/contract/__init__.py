"""The model contract, said once: what training writes, export bakes into the graph and the runtime reads.

Torch-free and light (standard library, numpy and pydantic only), so that every layer may import it.

- :mod:`~algan.contract.names`: graph input/output names, ONNX ``metadata_props`` keys, bundle file names and the
  tensor keys inside its safetensors files;
- :mod:`~algan.contract.manifest`: the typed manifest ``algan.json`` (:class:`Manifest`, :class:`Exports`,
  :class:`EngineSidecar`) and its one reader :func:`load_manifest` (``lenient=True`` for the runtime);
- :mod:`~algan.contract.patch`: the patch variant's :class:`PatchSpec` (the manifest's ``patch`` section);
- :mod:`~algan.contract.threshold`: the threshold rule (:func:`empirical_threshold`);
- :mod:`~algan.contract.images`: the one rule for which files of a folder are images of the set;
- :mod:`~algan.contract.files`: the one hash, the one timestamp format, durable writes, output-directory checks.

Every public name is importable from ``algan.contract`` itself.
"""

from algan.contract.files import (
    BUNDLE_DIR_MODE,
    BUNDLE_ENTRY_PATTERNS,
    BUNDLE_FILE_MODE,
    OutputDirError,
    atomic_directory,
    atomic_write_bytes,
    check_output_dir,
    file_sha256,
    foreign_entries,
    fsync_path,
    is_bundle_dir,
    replace_directory,
    utc_iso,
    utc_now_iso,
)
from algan.contract.images import (
    MASK_STEM_SUFFIXES,
    PHOTO_SUFFIXES,
    ImageListing,
    image_skip_reason,
    list_images,
)
from algan.contract.manifest import (
    FORMAT_VERSION,
    TRAINING_SECTIONS,
    AnomalyMapSection,
    BackboneSection,
    BundleError,
    CalibrationSection,
    CandidateFigures,
    EngineExport,
    EngineSidecar,
    Exports,
    FeaturesSection,
    GraphExport,
    HeadSection,
    HeadSelection,
    InputSection,
    Manifest,
    PatchSection,
    TilingSection,
    TrainingDataSection,
    TrainingSection,
    TritonExport,
    load_manifest,
    manifest_bytes,
    parse_manifest,
    write_manifest,
)
from algan.contract.metadata import graph_metadata, set_metadata
from algan.contract.names import (
    CALIBRATION_SCORES_FILE,
    ENGINE_FILE,
    ENGINE_INT8_CACHE_FILE,
    ENGINE_SIDECAR_FILE,
    ENGINE_TIMING_CACHE_FILE,
    EXPORT_KEYS,
    FP16_ONNX_FILE,
    IMAGE_SUFFIXES,
    IMAGES_KEY,
    INPUT_NAME,
    INT8_SET_FILE,
    KEY_CAL_CENTER,
    KEY_CAL_SCALE,
    KEY_MAP_NORM,
    KEY_MAP_SIZE,
    KEY_MODEL_ID,
    KEY_OUTPUTS,
    KEY_PIXEL_THRESHOLD,
    KEY_PRECISION,
    MANIFEST_FILE,
    MAP_OUTPUTS,
    MAPS_OUTPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    SAMPLES_FILE,
    SCORE_OUTPUTS,
    SCORES_KEY,
    SIGNATURE_FILE,
    WEIGHTS_FILE,
)
from algan.contract.patch import PatchSpec
from algan.contract.threshold import (
    DEFAULT_HOLDOUT,
    DEFAULT_PIXEL_FPR,
    EmpiricalThreshold,
    center_and_threshold,
    empirical_threshold,
    order_statistic_rank,
    pixel_threshold,
    scores_needed,
)

__all__ = [
    "BUNDLE_DIR_MODE", "BUNDLE_ENTRY_PATTERNS", "BUNDLE_FILE_MODE", "MASK_STEM_SUFFIXES", "PHOTO_SUFFIXES",
    "ImageListing", "OutputDirError", "check_output_dir", "foreign_entries", "image_skip_reason", "is_bundle_dir",
    "list_images", "CALIBRATION_SCORES_FILE", "ENGINE_FILE", "ENGINE_INT8_CACHE_FILE",
    "ENGINE_SIDECAR_FILE", "ENGINE_TIMING_CACHE_FILE", "EXPORT_KEYS", "FORMAT_VERSION", "FP16_ONNX_FILE",
    "IMAGES_KEY", "IMAGE_SUFFIXES", "INPUT_NAME", "INT8_SET_FILE", "KEY_CAL_CENTER", "KEY_CAL_SCALE", "KEY_MAP_SIZE",
    "KEY_MODEL_ID", "KEY_OUTPUTS", "KEY_PIXEL_THRESHOLD", "KEY_MAP_NORM", "KEY_PRECISION", "graph_metadata",
    "center_and_threshold", "set_metadata",
    "DEFAULT_HOLDOUT", "DEFAULT_PIXEL_FPR", "pixel_threshold", "MANIFEST_FILE", "MAPS_OUTPUT_NAME", "MAP_OUTPUTS",
    "ONNX_FILE", "OUTPUT_NAME",
    "SAMPLES_FILE", "SCORES_KEY", "SCORE_OUTPUTS", "SIGNATURE_FILE", "TRAINING_SECTIONS", "WEIGHTS_FILE",
    "AnomalyMapSection", "BackboneSection", "CandidateFigures", "HeadSelection", "TilingSection",
    "BundleError", "CalibrationSection", "EmpiricalThreshold",
    "EngineExport", "EngineSidecar", "Exports", "FeaturesSection", "GraphExport", "HeadSection", "InputSection",
    "Manifest", "PatchSection", "PatchSpec", "TrainingDataSection", "TrainingSection", "TritonExport",
    "atomic_directory", "atomic_write_bytes", "empirical_threshold", "file_sha256", "fsync_path", "load_manifest",
    "manifest_bytes", "order_statistic_rank", "parse_manifest", "replace_directory", "scores_needed",
    "utc_iso", "utc_now_iso", "write_manifest",
]
