"""Kubernetes resource quantities ("250m", "1.5", "2Gi") as exact numbers.

Pods state CPU and memory as quantity strings. The planner needs CPU in millicores and, to
compute a pod's QoS class, exact equality of requests and limits, so quantities are parsed into
`Decimal` values with the same suffixes the API server accepts.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Kubernetes stores quantities as 64-bit integers of their smallest unit; nothing larger is a
# quantity the API server would accept.
MAX_QUANTITY = Decimal(2**63 - 1)
_MAX_EXPONENT = 30
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)


def parse_quantity(value: object) -> Decimal:
    """The exact value of a quantity: a string such as "250m" or "2Gi", or a JSON number.

    Raises ValueError with the offending text for anything the API server would reject.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"quantity must be a string or a number, got {value!r}")
    text = str(value).strip()
    found = _QUANTITY.match(text)
    if found is None:
        raise ValueError(f"invalid quantity {text!r}")
    try:
        value = Decimal(found["number"]) * _multiplier(found["suffix"] or "")
    except (ArithmeticError, InvalidOperation) as exc:
        raise ValueError(f"quantity {text!r} is out of range") from exc
    if abs(value) > MAX_QUANTITY:
        raise ValueError(f"quantity {text!r} is out of range")
    return value


def _multiplier(suffix: str) -> Decimal:
    if suffix in _BINARY:
        return Decimal(_BINARY[suffix])
    if suffix in _DECIMAL:
        return _DECIMAL[suffix]
    exponent = int(suffix[1:])
    if abs(exponent) > _MAX_EXPONENT:
        raise ArithmeticError(exponent)
    return Decimal(10) ** exponent


def cpu_millis(value: object) -> int:
    """CPU in millicores, rounded up as the API server rounds CPU quantities."""
    millis = parse_quantity(value) * 1000
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))
