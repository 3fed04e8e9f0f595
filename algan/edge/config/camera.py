"""``cameras:`` section: one entry per camera, recording or folder of images (source kinds, replay, reconnects)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from algan.edge.config.base import Section, topic_name

#: URL schemes OpenCV/FFmpeg opens as live network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

SourceKind = Literal["file", "device", "stream", "folder", "gstreamer"]
#: Source kinds read live (a camera): newest frame only, never "finished", stale watchdog applies.
LIVE_KINDS = ("device", "stream", "gstreamer")


_Offset = Annotated[int, Field(ge=0)]
_Extent = Annotated[int, Field(gt=0)]
Roi = Annotated[
    tuple[_Offset, _Offset, _Extent, _Extent],
    Field(description="region of interest [x, y, width, height] (pixels)"),
]


class CameraConfig(Section):
    """One camera (or recording, or folder of images)."""

    name: str = Field(description="camera name, unique on this device, used as a topic level")
    source: int | str = Field(
        description="video file path, device index (0) or /dev/videoN, rtsp/http URL, folder of images, or a "
        "GStreamer pipeline ending in appsink (kind gstreamer)"
    )
    kind: Literal["auto", "file", "device", "stream", "folder", "gstreamer"] = Field(
        "auto",
        description="source kind; 'auto': integer or /dev path = device, URL = stream, text with ' ! ' = gstreamer "
        "pipeline, else file/folder",
    )
    roi: Roi | None = Field(None, description="crop [x, y, width, height] before resizing (pixels); omit = full frame")
    threshold: float | None = Field(None, gt=0, description="per-camera alarm threshold overriding alarm.threshold")
    clear_threshold: float | None = Field(
        None, gt=0, description="per-camera clear threshold; default scales alarm.clear_threshold with threshold"
    )
    queue_size: int | None = Field(
        None, ge=1, le=1024, description="frames buffered per camera; default 1 for live sources, 16 for files"
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="target frames/s passed on to the model (frames/s); extra frames are skipped (counted), for "
        "files by source time so a replay scores the same frames; omit = every frame",
    )
    realtime: bool = Field(
        False, description="file/folder replay paced at the video's own frame rate (like a camera); default: as fast "
        "as the model goes"
    )
    replay_fps: float | None = Field(
        None, gt=0, le=1000, description="file/folder replay paced at this rate (frames/s); implies realtime"
    )
    loop: bool = Field(False, description="file/folder: start again at the end instead of finishing (soak tests)")
    watch: bool = Field(
        False, description="folder: keep running and read new image files as they arrive (in name order)"
    )
    settle_s: float = Field(
        0.5,
        ge=0,
        le=600,
        description="folder watch: a new file is read once its size and mtime stayed unchanged this long (seconds); "
        "names starting with '.' or ending in .tmp/.part/.partial/.crdownload/~ are never read",
    )
    incomplete_wait_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="folder watch: a file refused as incomplete (empty, or a JPEG/PNG cut short: a writer that paused "
        "longer than settle_s, as SMB/FTP writers do) is read again whenever its size or mtime changes; it is "
        "reported as corrupt only once it stayed unchanged this long (seconds)",
    )
    resume: bool = Field(
        True,
        description="folder watch: remember the files already scored (name, size, mtime) in a small SQLite journal, "
        "so that a restart goes on where it stopped instead of scoring every file still in the folder again; "
        "false = read them all again",
    )
    journal: Path | None = Field(
        None,
        description="folder watch with resume: the journal file; a relative path is looked up like mqtt.outbox.path; "
        "default: <camera name>.journal.sqlite beside the outbox",
    )
    stale_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="live source without a frame for this long is released and reopened (seconds)",
    )
    reconnect_interval_s: float = Field(
        5.0, gt=0, le=3600, description="first wait before reopening a live source that failed or died (seconds)"
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, le=86_400, description="longest wait between reopen attempts; waits double up to it (seconds)"
    )
    reader_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="the camera reader thread (and its decoder's threads) runs this many nice steps below the daemon "
        "(Linux, 0-19): inference threads woken while it decodes take the CPU first; only for a box that runs "
        "nothing else, since any other busy process then starves the reader (frames late or dropped); 0 = the "
        "daemon's priority",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="stream: RTSP transport given to FFmpeg (tcp avoids smeared frames on lossy links)"
    )
    low_delay: bool = Field(True, description="stream: FFmpeg nobuffer/low_delay flags (less latency, fewer frames "
                            "buffered)")
    open_timeout_s: float = Field(10.0, gt=0, le=600, description="stream: FFmpeg open timeout (seconds)")
    read_timeout_s: float = Field(5.0, gt=0, le=600, description="stream: FFmpeg read timeout (seconds)")

    @field_validator("name")
    @classmethod
    def _name_topic_safe(cls, v: str) -> str:
        return topic_name(v, "camera name")

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"device index must be >= 0, got {v}")
        if isinstance(v, str) and not v.strip():
            raise ValueError("source is empty; give a file, folder, device index or URL")
        return v

    @model_validator(mode="after")
    def _kind_matches_source(self) -> CameraConfig:
        if self.kind in ("file", "folder", "stream", "gstreamer") and isinstance(self.source, int):
            raise ValueError(f"kind '{self.kind}' needs a path or URL as source, got the device index {self.source}")
        if self.threshold is not None and self.clear_threshold is not None and self.clear_threshold > self.threshold:
            msg = f"clear_threshold ({self.clear_threshold}) must be <= threshold ({self.threshold}); lower it"
            raise ValueError(msg)
        kind = self.resolved_kind
        replay = [k for k in ("realtime", "replay_fps", "loop", "watch") if getattr(self, k) not in (False, None)]
        if replay and kind not in ("file", "folder"):
            msg = f"{', '.join(replay)} only apply to file/folder sources, not to a {kind} source; remove it"
            raise ValueError(msg)
        if self.watch and self.kind == "file":
            raise ValueError("watch applies to folder sources; set kind: folder (or auto) or remove watch")
        if self.watch and self.loop:
            raise ValueError("a watched folder never ends, so loop has no meaning; remove one of watch/loop")
        if self.journal is not None and not self.watch:
            raise ValueError("journal applies to watched folders (watch: true); remove it or set watch: true")
        if self.reconnect_max_s < self.reconnect_interval_s:
            msg = (f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_interval_s "
                   f"({self.reconnect_interval_s}); raise it")
            raise ValueError(msg)
        return self

    @property
    def resolved_kind(self) -> SourceKind:
        """Source kind with 'auto' resolved without touching the file system ('file' stands for file or folder)."""
        if self.kind != "auto":
            return self.kind
        src = self.source
        if isinstance(src, int) or src.strip().isdigit() or src.startswith("/dev/video"):
            return "device"
        if src.lower().startswith(STREAM_SCHEMES):
            return "stream"
        if " ! " in src:
            return "gstreamer"
        return "file"

    @property
    def is_live(self) -> bool:
        """True for cameras, network streams and GStreamer pipelines (newest frame only, run until stopped), False
        for files/folders (never drop a frame)."""
        return self.resolved_kind in LIVE_KINDS

    @property
    def endless(self) -> bool:
        """True when the source never finishes by itself: live sources, watched folders and looped replays."""
        return self.is_live or self.watch or self.loop
