"""The web dashboard: one page at ``/`` and its static files. It talks to the server only
from the browser, over the REST API and the WebSocket, like any other client."""
