"""The one place in ``usage`` that touches the channel layer.

A broadcast is only a prompt ("user U changed up to position N"): channel-layer messages
are at most once, so the data itself is always read back from the projections.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"usage.user.{user_id}"


def changed(user_id: int, position: int, *, refresh: bool = False) -> None:
    """Tell every dashboard of ``user_id`` that its data changed up to ``position``;
    ``refresh`` asks for a new snapshot even at the same position (new official limits)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            user_group(user_id),
            {"type": "usage.changed", "position": position, "refresh": refresh},
        )
    except Exception:
        log.warning("could not announce change for user %s", user_id, exc_info=True)
