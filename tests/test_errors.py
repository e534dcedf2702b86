"""The typed error hierarchy: stable IDs, JSON shape, lookup errors that name the valid IDs."""

import pytest

from healer.diagnosis import errors


def test_every_issue_id_exists_with_a_distinct_class():
    ids = ["ok", "segfault", "abort", "killed", "interrupted", "host_oom", "gpu_oom", "gpu_error",
           "python_error", "missing_file", "blend_invalid", "output_error", "denoiser_unavailable",
           "engine_unavailable", "stall", "unknown"]
    assert list(errors.ERROR_TYPES) == ids
    classes = {errors.error_class(i) for i in ids}
    assert len(classes) == len(ids)
    for i in ids:
        cls = errors.error_class(i)
        assert issubclass(cls, errors.RenderError) and cls.type == i


def test_to_dict_has_the_classify_json_shape():
    err = errors.GpuOom(summary="GPU out of memory", findings=(errors.Finding("gpu_oom", 12, "Out of memory in x"),),
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

    err = errors.Segfault(summary="crash", frame=3)
    assert pickle.loads(pickle.dumps(err)) == err
    assert repr(err).startswith("SegfaultError(summary='crash'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.summary = "other"  # type: ignore[misc]
    assert errors.PythonError(fatal=False).severity == "warning"
