"""``mqtt:`` section: broker connection, TLS, topic prefix, QoS and throttling, the on-disk outbox, Home Assistant
discovery."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from algan.edge.config.base import TOPIC_PREFIX_RE, Section, no_control


class MqttTlsConfig(Section):
    """TLS towards the broker (mosquitto ``listener 8883`` with ``cafile``/``certfile``/``keyfile``)."""

    ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the broker certificate; omit = the system CA store"
    )
    cert_file: Path | None = Field(None, description="PEM client certificate (with key_file), for brokers that "
                                   "require client certificates (require_certificate true)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file (unencrypted)")
    insecure: bool = Field(
        False,
        description="skip the check that the broker certificate names mqtt.host (the chain is still verified); "
        "only for test setups and IP-addressed brokers without a matching certificate",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.tls.cert_file and mqtt.tls.key_file go together; set both or neither")
        return self


class OutboxConfig(Section):
    """On-disk queue (SQLite) of alarm events and camera states not yet acknowledged by the broker."""

    enabled: bool = Field(
        True, description="keep alarm events and camera states on disk until the broker acknowledged them"
    )
    path: Path | None = Field(
        None,
        description="SQLite file; a relative path is looked up in $STATE_DIRECTORY (systemd StateDirectory=) if "
        "set, else next to the config file; default <device_id>/outbox.sqlite there (one state directory per "
        "device: a second daemon on the same directory is refused)",
    )
    max_tries: int = Field(
        5, ge=1, le=1000,
        description="a message the broker closes the connection on this many times in a row goes to the dead-letter "
        "table (see algan-edge outbox list) and delivery goes on with the next (tries)",
    )
    max_events: int = Field(
        10_000, ge=10, le=10_000_000,
        description="most undelivered messages kept (messages); when full the oldest is dropped with a warning",
    )


class HomeAssistantConfig(Section):
    """Home Assistant MQTT discovery: a binary_sensor (alarm) and a sensor (score) per camera."""

    enabled: bool = Field(False, description="publish retained discovery configs on every broker connection")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery topic prefix")
    device_name: str | None = Field(
        None, description="device name shown in Home Assistant; default 'algan <device_id>'"
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix_topic_safe(cls, v: str) -> str:
        if not TOPIC_PREFIX_RE.fullmatch(v):
            raise ValueError(f"discovery_prefix {v!r} is not a valid topic prefix; use e.g. 'homeassistant'")
        return v


class MqttConfig(Section):
    """MQTT broker connection and topic prefix."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or IP address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (usually 1883, or 8883 with TLS)")
    prefix: str = Field("algan", description="first topic level(s), e.g. 'algan' or 'plant1/algan'")
    client_id: str | None = Field(None, description="MQTT client id; default 'algan-edge-<device_id>'")
    username: str | None = Field(None, description="broker user name; omit for anonymous access")
    password: str | None = Field(None, description="broker password (prefer password_file)")
    password_file: Path | None = Field(
        None,
        description="file holding the broker password (first line); relative paths are looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=) if set, else next to the config file",
    )
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; omit for plain TCP")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval (seconds)")
    connect_timeout_s: float = Field(
        10.0, ge=0, le=300,
        description="how long start-up waits for the first broker connection (seconds); an unreachable broker is "
        "then an error, a refusing one is retried; 0 = do not wait: run and keep retrying (alarms wait in the outbox)",
    )
    reconnect_min_s: int = Field(1, ge=1, le=3600, description="first wait before reconnecting (seconds)")
    reconnect_max_s: int = Field(
        30, ge=1, le=3600, description="longest wait between reconnect attempts; waits double up to it (seconds)"
    )
    max_queued_messages: int = Field(
        10_000, ge=1, description="messages kept in memory by the MQTT client while the broker is unreachable "
        "(messages); alarm events and states are kept on disk in the outbox instead"
    )
    score_qos: Literal[0, 1, 2] = Field(0, description="QoS of score messages (0 = at most once, cheapest)")
    score_every_n: int = Field(
        1, ge=1, le=100_000, description="publish the score of every Nth frame per camera (frames; 1 = every frame); "
        "a frame whose decision (score >= threshold) changes is always published"
    )
    score_min_delta: float | None = Field(
        None, ge=0, description="publish a score only when it changed by more than this since the last published one "
        "(score units); null = on any change"
    )
    alarm_qos: Literal[1, 2] = Field(1, description="QoS of alarm events and state (1 or 2; alarms are never QoS 0)")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="on-disk queue of undelivered alarms")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="optional Home Assistant MQTT discovery"
    )
    embedded_broker: Literal["auto", "never"] = Field(
        "auto",
        description="'auto': when host is loopback and nothing listens on host:port, start a built-in broker; "
        "'never': always use an external broker",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_topic_safe(cls, v: str) -> str:
        if not TOPIC_PREFIX_RE.fullmatch(v):
            msg = f"prefix {v!r} is not a valid topic prefix; use levels like 'algan' or 'plant1/algan' (no '+', '#')"
            raise ValueError(msg)
        return v

    @field_validator("client_id", "username", "host")
    @classmethod
    def _no_control(cls, v: str | None, info) -> str | None:  # noqa: ANN001
        return v if v is None else no_control(v, f"mqtt.{info.field_name}")

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either mqtt.password or mqtt.password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a broker password needs mqtt.username; add it or remove the password")
        if self.reconnect_max_s < self.reconnect_min_s:
            msg = (f"mqtt.reconnect_max_s ({self.reconnect_max_s}) must be >= mqtt.reconnect_min_s "
                   f"({self.reconnect_min_s}); raise it")
            raise ValueError(msg)
        return self
