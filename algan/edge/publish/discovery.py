"""Home Assistant MQTT discovery: retained config messages so cameras appear as entities by themselves.

Per camera: a ``binary_sensor`` (device class ``problem``) on the retained state topic (``alarm`` = on,
``normal`` = off) and a ``sensor`` with the latest score from the score topic. Both are available only while the
daemon's status topic says ``online`` (also the Last Will) *and* the camera's state topic is not ``offline`` (a dead
source): ``availability_mode: all`` over two availability topics, the state topic's mapped by a template. Pure
functions: the publisher sends them on each connect. See https://www.home-assistant.io/integrations/mqtt/ (MQTT
discovery; availability list, ``availability_mode``, ``value_template``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from algan.edge.publish.messages import (
    STATE_ALARM,
    STATE_NORMAL,
    STATE_OFFLINE,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Topics,
    dumps,
)

#: Jinja template mapping a camera state payload to availability: ``offline`` -> ``offline``, anything else -> online
CAMERA_AVAILABILITY_TEMPLATE = (f"{{{{ '{STATUS_OFFLINE}' if value == '{STATE_OFFLINE}' else '{STATUS_ONLINE}' }}}}")
#: the binary sensor's state template: ``offline`` resets it to unknown (Home Assistant's ``None`` payload) instead of
#: an unmatched payload; ``alarm`` / ``normal`` pass through
ALARM_STATE_TEMPLATE = f"{{{{ 'None' if value == '{STATE_OFFLINE}' else value }}}}"


def _object_id(text: str) -> str:
    """Home Assistant node/object ids allow ``[a-zA-Z0-9_-]`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def discovery_messages(
    topics: Topics, cameras: Sequence[str], discovery_prefix: str = "homeassistant", device_name: str | None = None,
    model_id: str = "",
) -> list[tuple[str, str, int, bool]]:
    """Discovery config messages as ``(topic, payload, qos, retain)``, retained QoS1.

    Args:
        topics: the daemon's topic names.
        cameras: camera names.
        discovery_prefix: Home Assistant's discovery prefix (``homeassistant``).
        device_name: device name shown in Home Assistant; default ``algan <device>``.
        model_id: shown as the device's model (e.g. the model id).
    """
    node = _object_id(f"algan_{topics.device}")
    device = {
        "identifiers": [node],
        "name": device_name or f"algan {topics.device}",
        "manufacturer": "algan",
        "model": model_id or "algan-edge",
    }
    daemon = {"topic": topics.status, "payload_available": STATUS_ONLINE, "payload_not_available": STATUS_OFFLINE}
    out = []
    for cam in cameras:
        obj = _object_id(cam)
        camera = {"topic": topics.state(cam), "value_template": CAMERA_AVAILABILITY_TEMPLATE,
                  "payload_available": STATUS_ONLINE, "payload_not_available": STATUS_OFFLINE}
        availability = {"availability": [daemon, camera], "availability_mode": "all"}
        alarm = {
            "name": f"{cam} alarm",
            "unique_id": f"{node}_{obj}_alarm",
            "state_topic": topics.state(cam),
            "payload_on": STATE_ALARM,
            "payload_off": STATE_NORMAL,
            "value_template": ALARM_STATE_TEMPLATE,
            "device_class": "problem",
            "qos": 1,
            "device": device,
            **availability,
        }
        score = {
            "name": f"{cam} score",
            "unique_id": f"{node}_{obj}_score",
            "state_topic": topics.score(cam),
            "value_template": "{{ value_json.score }}",
            "state_class": "measurement",
            "suggested_display_precision": 3,
            "device": device,
            **availability,
        }
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{obj}_alarm/config", dumps(alarm), 1, True))
        out.append((f"{discovery_prefix}/sensor/{node}/{obj}_score/config", dumps(score), 1, True))
    return out
