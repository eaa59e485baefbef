"""The server's routes, one router per family: `chat` (/v1/chat/completions), `images`
(/v1/images/generations), `audio` (/v1/audio/speech, /v1/audio/transcriptions), `models`
(/v1/models, /health) and `ui` (the web UI). A new route is a router here, included in
`app.create_app`."""
