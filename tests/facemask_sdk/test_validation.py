"""facemask_sdk.validation: the one set of checks behind every public setting."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.errors import FacemaskError
from facemask_sdk.validation import in_range, positive, true_or_false, unit_interval, whole_number


def test_accepted_values_come_back_as_plain_numbers() -> None:
    assert unit_interval("t", np.float32(0.25)) == 0.25 and type(unit_interval("t", 1)) is float
    assert whole_number("n", np.int64(3)) == 3 and type(whole_number("n", np.int64(3))) is int
    assert whole_number("port", 65535, 1, 65535) == 65535 and positive("s", 1e-9) == 1e-9
    assert in_range("r", 10, 0.0, 10.0) == 10.0
    assert true_or_false("on", np.bool_(True)) is True and true_or_false("on", False) is False


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: unit_interval("score_threshold", v), 1.5, "score_threshold must be a number in [0, 1], got 1.5"),
        (lambda v: unit_interval("score_threshold", v), True, "got True"),  # a bool is not a number here
        (lambda v: unit_interval("score_threshold", v), "0.5", "got '0.5'"),
        (lambda v: unit_interval("score_threshold", v), float("nan"), "got nan"),
        (lambda v: whole_number("max_detections", v), 0, "max_detections must be a whole number >= 1, got 0"),
        (lambda v: whole_number("max_detections", v), 2.0, "got 2.0"),
        (lambda v: whole_number("max_detections", v), False, "got False"),
        (lambda v: whole_number("http_port", v, 1, 65535), 70000, "http_port must be a whole number in [1, 65535]"),
        (lambda v: positive("timeout_s", v), 0, "timeout_s must be a number > 0, got 0"),
        (lambda v: in_range("rematch_distance", v, 0.0, 10.0), 11, "must be a number in [0, 10], got 11"),
        (lambda v: true_or_false("closeup_check", v), 1, "closeup_check must be True or False, got 1"),
        (lambda v: true_or_false("closeup_check", v), "yes", "got 'yes'"),
    ],
)
def test_refusals_name_the_setting_the_rule_and_the_value(check, value, message) -> None:
    with pytest.raises(FacemaskError) as caught:
        check(value)
    assert message in str(caught.value)
