"""SIGHUP reload applied by the EdgeApp (in process, no broker, no cameras): the ROI taken from the bundle at
start-up survives a reload of a config file without one."""

from __future__ import annotations

from edgekit import edge_config, write_config
from mapkit import make_map_bundle

from algan.edge.alarm import AlarmTracker
from algan.edge.app import EdgeApp
from algan.edge.config import load_config

ROI = [40, 20, 128, 128]


def test_reload_keeps_the_bundle_roi(tmp_path, caplog):
    bundle = make_map_bundle(tmp_path / "model", roi=ROI)
    cfg = edge_config(bundle, ("127.0.0.1", 1883), [{"name": "cam1", "source": str(tmp_path / "inbox")}])
    path = write_config(tmp_path / "edge.yaml", cfg)
    app = EdgeApp(load_config(path), config_path=path)
    app._apply_bundle_roi()  # as at start-up (run): the camera has no roi, it takes the bundle's
    app.trackers = {c.name: AlarmTracker(c.name, policy=app.cfg.alarm_policy(c)) for c in app.cfg.cameras}
    assert app._camera_roi("cam1") == tuple(ROI)

    cfg["cameras"][0]["threshold"] = 1.5
    write_config(path, cfg)
    assert app._apply_reload()
    assert app.thresholds["cam1"][0] == 1.5
    assert app._camera_roi("cam1") == tuple(ROI)  # regions and overlays stay on the frames' crop

    cfg["cameras"][0]["roi"] = [0, 0, 64, 64]  # the readers crop the old roi until a restart
    write_config(path, cfg)
    assert app._apply_reload()
    assert app._camera_roi("cam1") == tuple(ROI)
    assert "camera settings cam1.roi need a restart" in caplog.text
