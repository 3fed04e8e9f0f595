"""Every name the model contract fixes, defined once: graph inputs and outputs, ONNX ``metadata_props`` keys, the
files of a bundle and the tensor keys inside its safetensors files.

Exported graph (ONNX; the TensorRT engine keeps the same names):

- input :data:`INPUT_NAME` (``images``): uint8 [N, H, W, 3], BGR, 0-255, NHWC (H, W static);
- output :data:`OUTPUT_NAME` (``scores``): float32 [N], calibrated (0 = typical normal, 1.0 = the alarm threshold,
  higher = more anomalous);
- optional second output :data:`MAPS_OUTPUT_NAME` (``anomaly_maps``): float32 [N, h, w] (h, w static), on the same
  calibrated scale; map cell (i, j) covers input pixels [i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w). Image-only heads
  have one output (:data:`SCORE_OUTPUTS`, else :data:`MAP_OUTPUTS`).

Graph ``metadata_props`` (all strings): :data:`KEY_MODEL_ID`, :data:`KEY_OUTPUTS` (``scores`` or
``scores,anomaly_maps``), :data:`KEY_MAP_SIZE` (``h,w``; absent for score-only graphs), and the calibration constants
baked into the graph, :data:`KEY_CAL_CENTER` / :data:`KEY_CAL_SCALE` (``raw = score * scale + center``), with which
the runtime re-maps scores (and maps) after a re-calibration.
"""

from __future__ import annotations

# -- graph I/O ------------------------------------------------------------------------------------------------
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
MAPS_OUTPUT_NAME = "anomaly_maps"
#: the output list of a score-only graph and of a graph with anomaly maps (the manifest's ``outputs``)
SCORE_OUTPUTS = (OUTPUT_NAME,)
MAP_OUTPUTS = (OUTPUT_NAME, MAPS_OUTPUT_NAME)

# -- graph metadata_props keys ------------------------------------------------------------------------------
KEY_MODEL_ID = "algan.model_id"
KEY_OUTPUTS = "algan.outputs"
KEY_MAP_SIZE = "algan.map_size"
KEY_CAL_CENTER = "algan.calibration_center"
KEY_CAL_SCALE = "algan.calibration_scale"
#: graphs with maps of a bundle with a pixel threshold: the map level of a defect pixel on the graph's calibrated map
#: scale (:attr:`algan.contract.manifest.CalibrationSection.pixel_level`)
KEY_PIXEL_THRESHOLD = "algan.pixel_threshold"
#: the graph's compute precision, ``fp32`` or ``fp16`` (its I/O types never change)
KEY_PRECISION = "algan.precision"
#: graphs with maps: the per-location map normalisation inside the graph (none, mean or standardize)
KEY_MAP_NORM = "algan.map_norm"

# -- bundle files -------------------------------------------------------------------------------------------
MANIFEST_FILE = "algan.json"
WEIGHTS_FILE = "weights.safetensors"
#: held-out normal frames (uint8 NHWC BGR under :data:`IMAGES_KEY`)
SAMPLES_FILE = "samples.safetensors"
ONNX_FILE = "model.onnx"
FP16_ONNX_FILE = "model.fp16.onnx"
ENGINE_FILE = "model.engine"
#: the engine's JSON sidecar (:class:`algan.contract.manifest.EngineSidecar`)
ENGINE_SIDECAR_FILE = ENGINE_FILE + ".json"
ENGINE_TIMING_CACHE_FILE = ENGINE_FILE + ".timing.cache"
ENGINE_INT8_CACHE_FILE = ENGINE_FILE + ".int8.cache"
#: the INT8 calibration set (uint8 NHWC BGR under :data:`IMAGES_KEY`), written by algan-calibrate --int8-set
INT8_SET_FILE = "int8_calibration.safetensors"
#: the normal scores algan-calibrate kept (float32 under :data:`SCORES_KEY`)
CALIBRATION_SCORES_FILE = "calibration_scores.safetensors"
#: the bundle's Ed25519 signature (algan-export --sign / algan-edge sign; :mod:`algan.runtime.signing`)
SIGNATURE_FILE = "algan.sig"
#: graph file name -> its record in the manifest's ``exports`` (:class:`algan.contract.manifest.Exports`)
EXPORT_KEYS = {ONNX_FILE: "onnx", FP16_ONNX_FILE: "onnx_fp16"}

# -- tensor keys inside the bundle's safetensors files -----------------------------------------------------------
IMAGES_KEY = "images"
SCORES_KEY = "scores"

#: image file suffixes (lower case) read from data sets, image-folder cameras and folder-to-video conversion: the
#: formats OpenCV's ``imread`` decodes in the opencv-python wheels
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
