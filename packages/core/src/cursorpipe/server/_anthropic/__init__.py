"""The Anthropic Messages API of cursorpipe-server (issue 14; docs/anthropic.md): request
validation into cursorpipe types, sans-IO rendering of events in Anthropic's wire format, its error
shape and model listing. The route plugs these into the server's shared turn loop."""
