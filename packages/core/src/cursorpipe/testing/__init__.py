"""Offline test doubles, public so users can test their own apps without a Cursor account:
the Cursor API emulator (``cursorpipe.testing.emulator``) and the fake ``agent`` executable
(``cursorpipe.testing.fake_agent``, console script ``cursorpipe-fake-agent``).

The code lives beside the core in the repository but ships in its own distribution,
``cursorpipe-testing`` (``packages/testing``), so a plain ``cursorpipe`` install carries no test
double; install that distribution to get them (see its README)."""
