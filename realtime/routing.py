"""WebSocket routes. The dashboard consumer arrives with issue 4."""

from channels.routing import URLRouter

websocket_urlpatterns: list[object] = []
websocket_application = URLRouter(websocket_urlpatterns)
