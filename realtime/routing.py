"""WebSocket routes."""

from channels.routing import URLRouter
from django.urls import path

from realtime.auth import auth_stack
from realtime.consumers import DashboardConsumer

websocket_urlpatterns = [path("ws/claude-usage/", DashboardConsumer.as_asgi())]
websocket_application = auth_stack(URLRouter(websocket_urlpatterns))
