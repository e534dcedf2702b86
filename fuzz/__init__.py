"""Coverage-guided fuzzing (atheris, libFuzzer) of renderwatch's parsers of untrusted input; see fuzz.targets."""
