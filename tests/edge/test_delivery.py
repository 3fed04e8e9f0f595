"""The MQTT publisher's delivery bookkeeping (algan.edge.publish.delivery): pure, no broker."""

from __future__ import annotations

from algan.edge.publish.delivery import RESYNC_TIMEOUT_S, SEND_WINDOW, Confirmation, DeliveryLedger


def test_non_durable_messages_until_confirmed():
    led = DeliveryLedger()
    led.accepted(1, qos=0)
    led.accepted(2, qos=1)
    assert led.in_flight() == 2 and led.published == 0
    assert led.confirmed(2) == Confirmation(known=True, seq=None)
    assert led.in_flight() == 1 and led.published == 1
    assert led.confirmed(1) == Confirmation(known=True, seq=None)
    assert led.in_flight() == 0 and led.published == 2 and led.lost == 0


def test_a_mid_confirmed_before_it_was_registered():
    led = DeliveryLedger()
    assert led.confirmed(7) == Confirmation(known=False)  # paho's on_publish won the race against publish()
    assert led.published == 0
    led.accepted(7, qos=1)
    assert led.published == 1 and led.in_flight() == 0
    # an early mid of an outbox row: the row is to be deleted at once, and it is not waited for
    assert led.confirmed(8) == Confirmation(known=False)
    assert led.handed(seq=3, mid=8) is True
    assert led.published == 2 and led.unacked() == set() and led.last_handed == 3


def test_outbox_rows_in_flight_and_acknowledged():
    led = DeliveryLedger(window=3)
    assert led.room() == 3 and led.may_hand(0.0)
    assert led.handed(seq=10, mid=1) is False
    assert led.handed(seq=11, mid=2) is False
    assert led.unacked() == {10, 11} and led.last_handed == 11 and led.room() == 1
    assert led.in_flight() == 0  # durable messages are counted by the outbox, not here
    assert led.confirmed(1) == Confirmation(known=True, seq=10)
    assert led.unacked() == {11} and led.published == 1 and led.room() == 2


def test_a_full_window_stops_the_sender():
    led = DeliveryLedger(window=2)
    led.handed(1, 101)
    led.handed(2, 102)
    assert led.room() == 0 and not led.may_hand(0.0)
    led.confirmed(101)
    assert led.room() == 1 and led.may_hand(0.0)


def test_a_dropped_row_is_passed_over():
    led = DeliveryLedger()
    led.handed(1, 11)
    led.dropped(2)
    assert led.last_handed == 2 and led.unacked() == {1}


def test_reconnect_waits_for_resent_rows_then_goes_on():
    led = DeliveryLedger(window=10, resync_timeout_s=5.0)
    led.handed(1, 11)
    led.connected(now=100.0)  # row 1 is re-sent by paho first: newer rows wait
    assert not led.may_hand(100.0) and not led.may_hand(104.9)
    assert led.may_hand(105.0)  # the wait is bounded
    led.connected(now=200.0)
    assert not led.may_hand(200.0)
    led.confirmed(11)  # the last unacknowledged row acknowledged: no more waiting
    assert led.may_hand(200.0)


def test_reconnect_without_unacknowledged_rows_does_not_wait():
    led = DeliveryLedger()
    led.connected(now=50.0)
    assert led.may_hand(50.0)


def test_disconnect_loses_unwritten_qos0_only():
    led = DeliveryLedger()
    led.accepted(1, qos=0)
    led.accepted(2, qos=0)
    led.accepted(3, qos=1)
    led.handed(9, 4)
    assert led.disconnected() == 2
    assert led.lost == 2 and led.in_flight() == 1  # the QoS1 message is re-sent by paho
    assert led.unacked() == {9}
    assert led.disconnected() == 0 and led.lost == 2
    # a late confirmation of a lost QoS0 mid is not counted as published
    assert led.confirmed(1) == Confirmation(known=False) and led.published == 0


def test_refused_counts_lost():
    led = DeliveryLedger()
    assert led.refused() == 1
    assert led.refused() == 2 and led.lost == 2


def test_defaults():
    led = DeliveryLedger()
    assert led.window == SEND_WINDOW == 100 and led.resync_timeout_s == RESYNC_TIMEOUT_S == 10.0
