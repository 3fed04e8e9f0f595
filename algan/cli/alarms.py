"""``algan-alarms``: subscribe to alarm events, print one line per event, optionally run a command per raised alarm.

Usage::

    algan-alarms --broker 127.0.0.1:1883 [--prefix algan] [--device +] [--exec 'notify-send alarm']
                 [--count N] [--timeout S] [--json] [--client-id ID] [--share GROUP]
                 [--username U --password-file F]
                 (or the password in $ALGAN_MQTT_PASSWORD; --password works but warns: ps shows it)
                 [--cafile CA.pem [--cert C.pem --key K.pem] [--insecure]]

Subscribes (QoS1) to ``<prefix>/<device>/+/alarm`` (``$share/<GROUP>/<prefix>/<device>/+/alarm`` with ``--share``).
Each event prints one line on stdout, e.g.::

    2026-11-30T01:02:03.456Z  line1/cam1  RAISED   score 1.84 (peak 2.31 @ 124) frames 120-126  id 3f2a...  SNAPSHOT

(``@ 124``: the peak frame; SNAPSHOT: path of the peak-frame JPEG when the daemon saves snapshots.)

For each *raised* event ``--exec CMD`` runs through the shell with the event JSON on stdin (plus
``ALGAN_DEVICE``/``ALGAN_CAMERA``/``ALGAN_ALARM_ID`` in the environment); a failing or hanging command is logged and
never stops the subscriber.

Exit status: 0 after ``--count`` events, or at ``--timeout`` when no ``--count`` was given, or on SIGINT/SIGTERM;
1 when the broker cannot be reached at start (one line; ``--wait-broker S`` keeps retrying for S seconds first; after
a successful start paho reconnects by itself and re-subscribes), when it refuses the connection, or when
``--timeout`` passes before ``--count`` events arrived.
With ``--client-id`` the broker keeps a persistent session, so QoS1 alarms sent while the subscriber was down are
delivered when it comes back; each message is acknowledged only after it was printed (and ``--exec`` ran), so one
that arrived but was not handled before exit (``--count``, a signal) is delivered again next time.
With ``--share GROUP`` several consumers (each with its own ``--client-id``) share the alarm load: the broker hands
each event to one member of the group (an MQTT shared subscription; mosquitto >= 1.6, EMQX, HiveMQ, also on the
MQTT 3.1.1 connections used here), so together they see every event once. A member with a persistent session keeps
its turn while it is away: its share waits in its session until it comes back (README, "Many lines, one broker").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from algan.edge.logs import LEVELS, setup_logging

log = logging.getLogger("algan.alarms")


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, port 1883; ``[::1]:1883`` for IPv6) -> (host, port).

    Raises:
        argparse.ArgumentTypeError: malformed text or a port outside 1-65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or "]" in port_text:
        host, port_text = text, "1883"
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad broker {text!r}: use HOST:PORT, e.g. 127.0.0.1:1883") from None
    if not host or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"bad broker {text!r}: use HOST:PORT with a port in 1-65535")
    return host, port


def share_group(text: str) -> str:
    """A shared-subscription group name (MQTT 5 ShareName: no ``/``, ``+`` or ``#``).

    Raises:
        argparse.ArgumentTypeError: empty, or holding one of those characters.
    """
    if not text or any(c in text for c in "/+#"):
        raise argparse.ArgumentTypeError(f"bad --share group {text!r}: a non-empty name without '/', '+' or '#'")
    return text


def format_event(topic: str, event: dict[str, Any]) -> str:
    """One readable line for an alarm event published on ``.../<device>/<camera>/alarm``."""
    parts = topic.split("/")
    where = f"{parts[-3]}/{parts[-2]}" if len(parts) >= 3 else topic

    def num(key: str) -> str:
        v = event.get(key)
        return f"{v:.2f}" if isinstance(v, int | float) else "?"

    at = f" @ {event['peak_frame']}" if isinstance(event.get("peak_frame"), int) and event["peak_frame"] >= 0 else ""
    snapshot = f"  {event['snapshot']}" if event.get("snapshot") else ""
    region = event.get("region")
    if isinstance(region, dict) and isinstance(region.get("box"), list):
        snapshot = f"  region {region['box']} peak at {region.get('peak')}{snapshot}"
    file = f"  file {event['file']}" if event.get("file") else ""
    reason = f" ({event['reason']})" if event.get("reason") else ""
    return (
        f"{event.get('ts', '?')}  {where}  {str(event.get('state', '?')).upper():<8} score {num('score')} "
        f"(peak {num('peak')}{at}) frames {event.get('first_frame', '?')}-{event.get('last_frame', '?')}{reason}  "
        f"id {event.get('id', '?')}{file}{snapshot}"
    )


def run_command(cmd: str, topic: str, event: dict[str, Any], payload: bytes, timeout: float) -> None:
    """Run ``cmd`` through the shell with ``payload`` on stdin; log failures, never raise."""
    parts = topic.split("/")
    env = dict(os.environ)
    if len(parts) >= 3:
        env.update(ALGAN_DEVICE=parts[-3], ALGAN_CAMERA=parts[-2])
    env["ALGAN_ALARM_ID"] = str(event.get("id", ""))
    try:
        res = subprocess.run(cmd, shell=True, input=payload, env=env, timeout=timeout, check=False,
                             stdout=sys.stderr, stderr=sys.stderr)
    except subprocess.TimeoutExpired:
        log.error("--exec command timed out after %g s (killed): %s", timeout, cmd)
    except OSError as e:
        log.error("--exec command could not start (%s): %s", e, cmd)
    else:
        if res.returncode != 0:
            log.error("--exec command exited with status %d: %s", res.returncode, cmd)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algan-alarms", description="Print (and act on) algan-edge alarm events.")
    p.add_argument("--broker", type=parse_broker, default=("127.0.0.1", 1883), help="HOST:PORT (127.0.0.1:1883)")
    p.add_argument("--prefix", default="algan", help="topic prefix (default: algan)")
    p.add_argument("--device", default="+", help="device id, or + for all devices (default)")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD", help="shell command run per RAISED event, JSON on stdin")
    p.add_argument("--exec-timeout", type=float, default=30.0, help="seconds before --exec is killed (default: 30)")
    p.add_argument("--count", type=int, help="exit 0 after N events")
    p.add_argument("--timeout", type=float, help="exit after S seconds")
    p.add_argument("--json", action="store_true", help="print each event as one JSON line (with topic) instead")
    p.add_argument("--wait-broker", type=float, default=0.0, metavar="S",
                   help="keep retrying an unreachable broker for S seconds before giving up (default: 0)")
    p.add_argument("--client-id", help="fixed client id: persistent session, alarms queued while away")
    p.add_argument("--share", type=share_group, metavar="GROUP",
                   help="join the shared subscription GROUP: each event goes to one consumer of the group")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password", default=None,
                   help="broker password: avoid it (any user sees it in ps and it stays in the shell history); "
                   "use $ALGAN_MQTT_PASSWORD or --password-file")
    p.add_argument("--password-file", metavar="F", help="read the broker password from the first line of F")
    p.add_argument("--cafile", metavar="PEM", help="use TLS, verifying the broker with this CA certificate")
    p.add_argument("--cert", metavar="PEM", help="TLS client certificate (with --key)")
    p.add_argument("--key", metavar="PEM", help="TLS client key (with --cert)")
    p.add_argument("--tls", action="store_true", help="use TLS with the system CA store (implied by --cafile)")
    p.add_argument("--insecure", action="store_true", help="TLS: do not check the broker's host name")
    p.add_argument("--log-level", default="info", choices=LEVELS, help="stderr log verbosity (default: info)")
    from algan.cli._common import add_version

    return add_version(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    host, port = args.broker
    topic = f"{args.prefix}/{args.device}/+/alarm"
    if args.share:
        topic = f"$share/{args.share}/{topic}"
    events: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connected = threading.Event()
    refused: list[str] = []
    stop = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            refused.append(str(reason_code))
            return
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        log.info("subscribed to %s on %s:%d", topic, host, port)
        connected.set()

    def on_message(client, userdata, msg) -> None:  # noqa: ANN001
        events.put((msg.topic, msg.payload, msg.mid, msg.qos))

    persistent = args.client_id is not None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id or "",
                         clean_session=not persistent, protocol=mqtt.MQTTv311)
    client.manual_ack_set(True)  # acknowledge after handling: a persistent session re-delivers what was not handled
    err = _setup_auth(client, args)
    if err:
        print(f"algan-alarms: {err}", file=sys.stderr)
        return 2
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    give_up = time.monotonic() + args.wait_broker
    while True:
        try:
            client.connect(host, port, keepalive=30)
            break
        except (OSError, ValueError) as e:
            if time.monotonic() < give_up:
                time.sleep(0.2)
                continue
            reason = getattr(e, "strerror", None) or str(e)
            print(f"algan-alarms: cannot reach MQTT broker {host}:{port} ({reason}); check --broker and that the "
                  "broker runs (algan-edge broker starts one)", file=sys.stderr)
            return 1
    client.loop_start()
    try:
        deadline = time.monotonic() + 10.0
        while not connected.wait(0.05):
            if refused or time.monotonic() > deadline:
                why = refused[0] if refused else "no answer within 10 s"
                print(f"algan-alarms: MQTT broker {host}:{port} refused the connection ({why}); check --username/"
                      "--password", file=sys.stderr)
                return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        return _consume(args, events, stop, client.ack)
    finally:
        client.disconnect()
        client.loop_stop()


def _setup_auth(client: mqtt.Client, args: argparse.Namespace) -> str | None:
    """Credentials and TLS: the password from ``--password-file`` or ``$ALGAN_MQTT_PASSWORD`` (``--password`` still
    works, with a warning: other users see it in ``ps``); returns a one-line error for bad options/files."""
    password = os.environ.get("ALGAN_MQTT_PASSWORD")
    if args.password is not None:
        log.warning("--password is visible to every user of this machine (ps, /proc) and stays in the shell "
                    "history; put it in a file (--password-file F, mode 0600) or in $ALGAN_MQTT_PASSWORD")
        password = args.password
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as e:
            return f"cannot read --password-file {args.password_file} ({getattr(e, 'strerror', None) or 'empty'})"
    if args.username:
        client.username_pw_set(args.username, password)
    if bool(args.cert) != bool(args.key):
        return "--cert and --key go together; give both or neither"
    if args.cafile or args.tls or args.cert:
        try:
            ctx = ssl.create_default_context(cafile=args.cafile)
            if args.cert:
                ctx.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as e:
            return f"cannot load the TLS files ({e}); check --cafile/--cert/--key"
        if args.insecure:
            ctx.check_hostname = False
        client.tls_set_context(ctx)
    return None


def _consume(args: argparse.Namespace, events: queue.SimpleQueue, stop: threading.Event,
             ack: Callable[[int, int], object] = lambda mid, qos: None) -> int:
    end = time.monotonic() + args.timeout if args.timeout is not None else None
    seen = 0
    while not stop.is_set():
        if args.count is not None and seen >= args.count:
            return 0
        wait = 0.2 if end is None else min(0.2, end - time.monotonic())
        if wait <= 0:
            if args.count is not None:
                log.error("timeout: %d of %d events received in %g s", seen, args.count, args.timeout)
                return 1
            return 0
        try:
            topic, payload, mid, qos = events.get(timeout=wait)
        except queue.Empty:
            continue
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            log.warning("ignoring malformed alarm message on %s: %s", topic, e)
            ack(mid, qos)
            continue
        seen += 1
        if args.json:
            print(json.dumps({"topic": topic, **event}, separators=(",", ":")), flush=True)
        else:
            print(format_event(topic, event), flush=True)
        if args.exec_cmd and event.get("state") == "raised":
            run_command(args.exec_cmd, topic, event, payload, args.exec_timeout)
        ack(mid, qos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
