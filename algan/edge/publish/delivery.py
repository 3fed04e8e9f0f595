"""Delivery bookkeeping of the MQTT publisher: which messages are in flight, which are confirmed, which outbox rows
may be handed to the client next. Pure: no sockets, no threads, no locks, no clock of its own (the caller passes
``now``); :class:`~algan.edge.publish.mqtt.MqttPublisher` holds its lock around every call and does the I/O (paho,
the outbox) the answers ask for.

Vocabulary:

* a *mid* is paho's message id of one handed-over message; it is confirmed by ``on_publish`` once written (QoS0) or
  acknowledged (QoS1). paho may confirm a mid before ``publish()`` returned it to us: such an *early* mid is
  remembered and matched when it is registered.
* a *seq* is an outbox row (a durable message: alarm event or camera state). Rows are handed in sequence order, at
  most ``window`` unacknowledged at a time; after a reconnect paho re-sends its unacknowledged rows first, and newer
  rows wait for those (at most ``resync_timeout_s``) so the order holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Outbox rows handed to paho and not yet acknowledged, at most (bounds paho's memory and the replay burst).
SEND_WINDOW = 100
#: After a reconnect, newer outbox rows wait this long at most for paho's re-sent older ones to be acknowledged.
RESYNC_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Confirmation:
    """What one ``on_publish`` means.

    Attributes:
        known: the mid was registered (False: confirmed before registration; remembered as early).
        seq: the outbox row to delete now (a durable message acknowledged), else ``None``.
    """

    known: bool
    seq: int | None = None


@dataclass
class DeliveryLedger:
    """Counts and in-flight sets of one publisher (not thread-safe: the caller holds its lock).

    Attributes:
        published: messages confirmed written (QoS0) or acknowledged (QoS1).
        lost: messages that will never be delivered (QoS0 while disconnected, a full client queue, an error).
        last_handed: highest outbox seq handed to the client (or dropped); the next rows come after it.
    """

    window: int = SEND_WINDOW
    resync_timeout_s: float = RESYNC_TIMEOUT_S
    published: int = 0
    lost: int = 0
    last_handed: int = 0
    _pending: dict[int, int | None] = field(default_factory=dict)  # mid -> outbox seq (None: not durable)
    _early: set[int] = field(default_factory=set)  # mids confirmed before they were registered
    _qos0: set[int] = field(default_factory=set)  # pending mids of QoS0 messages
    _unacked: set[int] = field(default_factory=set)  # outbox seqs handed, not yet acknowledged
    _resync_until: float = 0.0  # until then newer rows wait for the re-sent older ones

    # -- a message handed to the client ----------------------------------------------------------------------
    def accepted(self, mid: int, qos: int) -> None:
        """A non-durable message was handed to the client as ``mid``."""
        if mid in self._early:
            self._early.discard(mid)
            self.published += 1
            return
        self._pending[mid] = None
        if qos == 0:
            self._qos0.add(mid)

    def handed(self, seq: int, mid: int) -> bool:
        """Outbox row ``seq`` was handed to the client as ``mid``.

        Returns:
            True when it was already acknowledged (early): delete the row now.
        """
        self.last_handed = seq
        if mid in self._early:
            self._early.discard(mid)
            self.published += 1
            return True
        self._pending[mid] = seq
        self._unacked.add(seq)
        return False

    def dropped(self, seq: int) -> None:
        """Outbox row ``seq`` cannot be published at all (the client refused it): it is passed over."""
        self.last_handed = seq

    def forget(self, seq: int) -> int | None:
        """Outbox row ``seq`` was taken out of delivery (dead letter) while unacknowledged.

        Returns:
            Its mid (to remove from the client's queue), or ``None`` when it was not in flight.
        """
        self._unacked.discard(seq)
        if not self._unacked:
            self._resync_until = 0.0
        for mid, s in self._pending.items():
            if s == seq:
                del self._pending[mid]
                return mid
        return None

    def oldest_unacked(self) -> int | None:
        """The lowest outbox seq handed and not yet acknowledged (the first the client re-sends), else ``None``."""
        return min(self._unacked) if self._unacked else None

    def refused(self) -> int:
        """A message the client did not take (queue full, QoS0 while disconnected, error) is lost.

        Returns:
            The number of messages lost so far.
        """
        self.lost += 1
        return self.lost

    # -- client callbacks --------------------------------------------------------------------------------------
    def confirmed(self, mid: int) -> Confirmation:
        """The client confirmed ``mid`` (``on_publish``)."""
        if mid not in self._pending:
            self._early.add(mid)
            return Confirmation(known=False)
        seq = self._pending.pop(mid)
        self._qos0.discard(mid)
        self.published += 1
        if seq is not None:
            self._unacked.discard(seq)
            if not self._unacked:
                self._resync_until = 0.0
        return Confirmation(known=True, seq=seq)

    def connected(self, now: float) -> None:
        """The broker accepted a (re)connection at ``now`` (monotonic seconds): rows still unacknowledged are
        re-sent by the client first, so newer rows wait for them (at most :attr:`resync_timeout_s`)."""
        self._resync_until = now + self.resync_timeout_s if self._unacked else 0.0

    def disconnected(self) -> int:
        """The connection was lost: QoS0 messages not yet written are discarded by the client and never confirmed.

        Returns:
            How many were lost now (added to :attr:`lost`).
        """
        n = len(self._qos0)
        self.lost += n
        for mid in self._qos0:
            self._pending.pop(mid, None)
        self._qos0.clear()
        return n

    # -- questions ----------------------------------------------------------------------------------------------
    def room(self) -> int:
        """How many more outbox rows may be handed now (the send window minus the unacknowledged ones)."""
        return self.window - len(self._unacked)

    def may_hand(self, now: float) -> bool:
        """Whether the sender may hand more outbox rows at ``now`` (while connected): room in the window and no
        re-sent older rows being waited for."""
        return self.room() > 0 and now >= self._resync_until

    def in_flight(self) -> int:
        """Non-durable messages handed and not yet confirmed (durable ones are counted by the outbox)."""
        return sum(1 for seq in self._pending.values() if seq is None)

    def unacked(self) -> set[int]:
        """Outbox seqs handed and not yet acknowledged (a copy)."""
        return set(self._unacked)
