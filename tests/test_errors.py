"""The error table: every family has one outcome, and a failure's one line never carries a password."""

import pytest
from sqlalchemy.engine import make_url

from server import errors
from server.errors import OUTCOMES, Interrupted, LintRefused, Phase, RevisionFailed, ServiceError, describe, outcome

FAMILIES = [
    value
    for value in vars(errors).values()
    if isinstance(value, type) and issubclass(value, ServiceError) and value is not ServiceError
]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.__name__)
def test_every_error_family_has_its_own_row_in_the_table(family):
    assert family in OUTCOMES
    row = OUTCOMES[family]
    assert row.exit_status in (0, 1) and 400 <= row.http_status <= 599
    assert row.phase is None or isinstance(row.phase, Phase)


def test_an_error_of_a_subclass_takes_its_nearest_family_row():
    class Special(RevisionFailed):
        pass

    assert outcome(Special("0003", "boom")) == OUTCOMES[RevisionFailed]
    assert outcome(Interrupted("stop")).exit_status == 0
    assert outcome(LintRefused("refused")).http_status == 409


def test_describe_gives_the_first_line_and_masks_the_password():
    url = make_url("postgresql://app:hunter2@db/app")
    line = describe(RuntimeError("connect to app:hunter2@db failed\nsecond line"), url)
    assert line == "RuntimeError: connect to app:***@db failed"
