"""The exit statuses of `renderwatch render` and `renderwatch exec` (and the healer service's jobs).

No imports: the CLI reads them before anything else is loaded.

Usage::

    from healer.diagnosis.exits import EXIT_USAGE
"""

EXIT_OK = 0             # every requested frame has a verified output
EXIT_FAILED = 1         # gave up: restarts exhausted, or an error that restarting cannot fix
EXIT_USAGE = 2          # bad arguments or configuration
EXIT_INPUT = 3          # fail-fast input error: missing .blend/library, unreadable .blend, output, engine
EXIT_STRICT = 4         # --strict: frames rendered, but a reported error (python_error, missing texture)
EXIT_CANCELLED = 130    # cancelled or interrupted on purpose (Ctrl-C, SIGTERM, API cancel)
EXIT_INTERNAL = 70      # renderwatch itself failed (EX_SOFTWARE): a bug, said in one line (every command)
