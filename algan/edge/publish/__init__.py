"""Publishing: scores, alarms, states, stats and snapshots out of the daemon.

messages (topics and JSON payloads), mqtt (paho-mqtt publisher: Last Will, QoS 1, flush), delivery (pure
bookkeeping of what is in flight, acknowledged or waiting), outbox (durable SQLite queue of alarms and states),
discovery (Home Assistant), broker (embedded amqtt broker), snapshots (JPEG of each alarm's peak frame). Import the
submodules directly.
"""
