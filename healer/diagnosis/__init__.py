"""What went wrong: Blender's output, crash file and exit status -> one typed error (`classify`).

Pure: no I/O, no processes. `catalog` is the one table of error types that the classifier, the
policy, the exit statuses and the incident names read; `errors` holds their classes.
"""
