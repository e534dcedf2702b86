"""The typed error hierarchy: stable IDs, JSON shape, lookup errors that name the valid IDs."""

import pytest

from healer.diagnosis import errors


def test_every_issue_id_exists_with_a_distinct_class():
    ids = ["ok", "segfault", "abort", "killed", "interrupted", "host_oom", "gpu_oom", "gpu_error",
           "python_error", "missing_file", "blend_invalid", "output_error", "denoiser_unavailable", "scene_limit",
           "engine_unavailable", "cpu_fallback", "suspect_frame", "stall", "unknown"]
    assert list(errors.ERROR_TYPES) == ids
    classes = {errors.error_class(i) for i in ids}
    assert len(classes) == len(ids)
    for i in ids:
        cls = errors.error_class(i)
        assert issubclass(cls, errors.RenderError) and cls.type == i


def test_to_dict_has_the_classify_json_shape():
    err = errors.GpuOomError(summary="GPU out of memory", findings=(errors.Finding("gpu_oom", 12, "Out of memory in x"),),
                        frame=7)
    d = err.to_dict()
    assert d["type"] == "gpu_oom" and d["fatal"] is True and d["summary"] == "GPU out of memory"
    assert d["findings"] == [{"type": "gpu_oom", "line": 12, "text": "Out of memory in x"}]
    assert d["frame"] == 7
    assert type(err).__name__ == "GpuOomError"


def test_unknown_id_names_the_valid_ones():
    with pytest.raises(KeyError, match="gpu_oom"):
        errors.error_class("gpu_melted")


def test_errors_are_frozen_values_that_pickle():
    import dataclasses
    import pickle

    err = errors.SegfaultError(summary="crash", frame=3)
    assert pickle.loads(pickle.dumps(err)) == err
    assert repr(err).startswith("SegfaultError(summary='crash'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.summary = "other"  # type: ignore[misc]
    assert errors.PythonError(fatal=False).severity == "warning"


def test_the_catalog_is_the_one_table():
    """Every type has one row; the class, the policy rule, the precedence and the exit status all read it."""
    import inspect
    import re

    from healer.diagnosis import catalog, classify
    from healer.supervising import policy

    assert set(catalog.TYPES) == set(errors.ERROR_TYPES)
    source = inspect.getsource(errors)
    for type_id, cls in errors.ERROR_TYPES.items():
        row = catalog.TYPES[type_id]
        assert re.search(rf"^class {cls.__name__}\(RenderError\):", source, re.M), f"{cls.__name__} is written out"
        assert cls.severity == row.severity and cls.__doc__ == row.doc
        if row.policy:
            assert policy.DEFAULT_RULES[type_id].kind == row.policy and policy.DEFAULT_RULES[type_id].message == row.fix
    assert classify._CAUSE_ORDER == catalog.CAUSE_ORDER and classify._CRASH_ORDER == catalog.CRASH_ORDER
    assert policy.REPORT_TYPES == catalog.REPORT_TYPES == {"python_error", "missing_file", "cpu_fallback", "suspect_frame"}


def test_interrupted_has_one_answer_everywhere():
    """Stopped on purpose from outside: not restarted (fail_fast), and the job ends as cancelled (130),
    as the healer's own cancel does. It used to be fail_fast in the policy but exit 1."""
    from healer.diagnosis import catalog
    from healer.supervising import policy

    assert policy.DEFAULT_RULES["interrupted"].kind == "fail_fast"
    assert catalog.exit_status("interrupted") == catalog.EXIT_CANCELLED == 130
    assert errors.InterruptedError.severity == "warning"
    for type_id in catalog.FAIL_FAST_TYPES - {"interrupted"}:
        assert catalog.exit_status(type_id) == catalog.EXIT_INPUT, type_id
    assert catalog.exit_status("segfault") == catalog.exit_status("python_error") == catalog.EXIT_FAILED


def test_the_readmes_exit_table_is_the_codes(tmp_path, capsys):
    """The README called 3 a configuration error while a bad config exits 2: its table is read against
    healer/diagnosis/exits.py, and a bad config file is run to see which code it gives."""
    import re
    from pathlib import Path

    from healer.diagnosis import catalog, exits
    from renderwatch.cli import main

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("| exit | meaning |", 1)[1].split("\n\n", 1)[0]     # the exit table alone
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M))
    codes = {v for k, v in vars(exits).items() if k.startswith("EXIT_")}
    assert {int(c) for c in table} == codes
    assert "configuration" in table[str(exits.EXIT_USAGE)] and "configuration" not in table[str(exits.EXIT_INPUT)]
    for type_id in catalog.FAIL_FAST_TYPES - {"interrupted"}:
        assert catalog.exit_status(type_id) == exits.EXIT_INPUT
    bad = tmp_path / "rw.toml"
    bad.write_text("[healer]\nconcurency = 3\n")
    (tmp_path / "a.blend").write_bytes(b"")
    assert main(["render", str(tmp_path / "a.blend"), "--frames", "1", "--config", str(bad)]) == exits.EXIT_USAGE
    assert "configuration" in table[str(exits.EXIT_USAGE)] and "concurency" in capsys.readouterr().err
