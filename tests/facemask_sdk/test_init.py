"""The package itself (facemask_sdk/__init__.py): its lazy exports are the very functions, whatever is imported
first."""

from __future__ import annotations


def test_lazy_exports_are_the_functions_whatever_is_imported_first(fresh_python) -> None:
    code = (
        "from facemask_sdk.annotation import annotate as direct\n"
        "import facemask_sdk\n"
        "from facemask_sdk import annotate, Detections\n"
        "assert annotate is direct and callable(annotate), annotate\n"
        "import facemask_sdk.detections\n"
        "assert facemask_sdk.Detections is facemask_sdk.detections.Detections\n"
    )
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
