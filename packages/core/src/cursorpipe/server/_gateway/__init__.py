"""The team gateway (issue 17): per-caller Cursor credentials and session state shared by
replicas. Private: the server wires it from ``CursorPipeConfig`` (``auth_mode``, ``state_url``)."""
