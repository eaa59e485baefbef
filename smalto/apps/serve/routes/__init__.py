"""The server's routes, one router per family: `chat` (/v1/chat/completions), `images`
(/v1/images/generations), `models` (/v1/models, /health) and `ui` (the web UI). A new route is a
router here, included in `app.create_app`."""
