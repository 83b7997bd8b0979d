"""Validation errors as lines a person can act on."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, model_validator

from ics_sms.schemas.errors import describe


class _Pair(BaseModel):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> _Pair:
        if self.low > self.high:
            raise ValueError("low: must not be above high")
        return self


def test_a_field_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        _Pair(low="x", high=1)  # type: ignore[arg-type]
    assert describe(caught.value) == ["low: Input should be a valid integer, unable to parse "
                                      "string as an integer"]


def test_a_model_error_is_its_reason_alone() -> None:
    with pytest.raises(ValidationError) as caught:
        _Pair(low=2, high=1)
    assert describe(caught.value) == ["low: must not be above high"]
