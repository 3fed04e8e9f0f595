"""Capture: frames from a camera source to the model's batches.

sources (OpenCV video/RTSP/V4L2/GStreamer, image folders once or watched), camera (one reader thread per camera:
prepare, hand over, stale watchdog, reopen with backoff), journal (read journal of a watched folder), hub (bounded
per-camera frame queues), batcher (pure cross-camera batching rule + thin driver). Import the submodules directly.
"""
