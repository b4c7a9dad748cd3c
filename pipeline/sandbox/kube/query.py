"""Query parameters read as kube-apiserver reads them, so every client's spelling works.

apiserver converts query strings with apimachinery's `Convert_Slice_string_To_bool`: only an
absent parameter, "0" or any casing of "false" is false; anything else (`true`, `True`, `1`,
`t`, even an empty value) is true. Integers are Go's `strconv.ParseInt`: a malformed one is
400 BadRequest. Unknown parameters are ignored, as the real server ignores them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .status import bad_request

_GO_INT = re.compile(r"[+-]?[0-9]+")


def flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean parameter: absent, "0" and "false" (any case) are false, all else true."""
    value = query.get(name)
    if value is None:
        return False
    return not (value == "0" or value.lower() == "false")


def integer(query: Mapping[str, str], name: str) -> int | None:
    """An integer parameter, None when absent; 400 when it is not a base-10 integer."""
    value = query.get(name)
    if value is None or value == "":
        return None
    if not _GO_INT.fullmatch(value):
        raise bad_request(f'unable to parse "{value}" as an integer for parameter "{name}"')
    return int(value)
