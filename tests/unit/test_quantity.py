"""Kubernetes quantities: the suffixes the API server accepts, exact values, and rejections."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.quantity import cpu_millis, parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("250m", Decimal("0.25")),
        ("1", Decimal(1)),
        ("1.5", Decimal("1.5")),
        ("2Gi", Decimal(2 * 2**30)),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("1k", Decimal(1000)),
        ("2M", Decimal(2_000_000)),
        ("500u", Decimal("0.0005")),
        ("7n", Decimal("7e-9")),
        (".5", Decimal("0.5")),
        ("+1", Decimal(1)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
        (0, Decimal(0)),
    ],
)
def test_parse_quantity_gives_the_exact_value(value: object, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


def test_equal_quantities_in_different_spellings_compare_equal() -> None:
    assert parse_quantity("1") == parse_quantity("1000m") == parse_quantity(1)
    assert parse_quantity("1Gi") == parse_quantity("1024Mi")
    assert parse_quantity("1Gi") != parse_quantity("1G")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("250m", 250),
        ("1", 1000),
        ("1.5", 1500),
        (2, 2000),
        (0.5, 500),
        ("0", 0),
        ("0.0001", 1),
        ("1001u", 2),
        ("100001u", 101),
    ],
)
def test_cpu_millis(value: object, expected: int) -> None:
    assert cpu_millis(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("abc", "'abc'"),
        ("1.2.3", "'1.2.3'"),
        ("", "''"),
        ("1Xi", "'1Xi'"),
        ("1ki", "'1ki'"),
        ("1K", "'1K'"),
        ("m", "'m'"),
        ("1 Gi", "'1 Gi'"),
        (True, "True"),
        (None, "None"),
        ([1], "[1]"),
    ],
)
def test_invalid_quantities_raise_value_error_naming_the_text(value: object, named: str) -> None:
    with pytest.raises(ValueError, match="quantity") as caught:
        parse_quantity(value)
    assert named in str(caught.value)


def test_cpu_millis_rejects_what_parse_quantity_rejects() -> None:
    with pytest.raises(ValueError, match="'abc'"):
        cpu_millis("abc")


_DECIMAL_SUFFIXES = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(1000), "M": Decimal(10**6)}
_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@given(st.integers(0, 10**9), st.sampled_from(sorted(_DECIMAL_SUFFIXES)))
def test_decimal_suffix_scales_an_integer(number: int, suffix: str) -> None:
    assert parse_quantity(f"{number}{suffix}") == number * _DECIMAL_SUFFIXES[suffix]


@given(st.integers(0, 10**6), st.sampled_from(sorted(_BINARY_SUFFIXES)))
def test_binary_suffix_scales_an_integer(number: int, suffix: str) -> None:
    assert parse_quantity(f"{number}{suffix}") == number * _BINARY_SUFFIXES[suffix]


@given(st.integers(0, 10**7))
def test_millicores_round_trip(millis: int) -> None:
    assert cpu_millis(f"{millis}m") == millis


@given(st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False))
def test_cpu_millis_is_the_ceiling_of_the_exact_value(cores: Decimal) -> None:
    millis = cpu_millis(str(cores))
    exact = cores * 1000
    assert exact <= millis < exact + 1
