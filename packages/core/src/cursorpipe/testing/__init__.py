"""Offline test doubles, public so users can test their own apps without a Cursor account:
the Cursor API emulator (``cursorpipe.testing.emulator``) and the fake ``agent`` executable
(``cursorpipe.testing.fake_agent``, console script ``cursorpipe-fake-agent``)."""
