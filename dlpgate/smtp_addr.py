"""A fast path for the addresses in MAIL FROM / RCPT TO.

aiosmtpd parses every address with the `email` header parser and defines a typing.Protocol class
on each call: under load that was a seventh of the SMTP process's Python time. Plain
`<local@domain>` forms (nearly all real traffic) are recognised with one regex; anything else
(quoted local parts, source routes, IP literals, the null path) goes to aiosmtpd's parser.
"""

from __future__ import annotations

import re

_SIMPLE = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
                     r"@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*)>")


def simple_address(arg: str) -> tuple[str, str] | None:
    """(addr-spec, rest of the argument) for a plain angle address, else None."""
    m = _SIMPLE.match(arg)
    if m is None:
        return None
    return m.group(1), arg[m.end():]


# RFC 5321 4.1.2 Domain: labels of letters, digits and hyphens. Underscores are let through
# (Windows machine names in HELO are common and harmless); nothing else is.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# address-literal: [IPv4], [IPv6:...] or a general literal tag:content (RFC 5321 4.1.3)
_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45}|[A-Za-z0-9\-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+)\]")
# RFC 5321 4.1.2 esmtp-param: keyword ["=" value], value any of %d33-60 / %d62-126
_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*(?:=[\x21-\x3c\x3e-\x7e]+)?")


def valid_helo(arg: str) -> bool:
    """Whether a HELO/EHLO argument is an RFC 5321 Domain or address literal (no control
    characters, spaces or line breaks: it is copied into the Received: header)."""
    if len(arg) > 255:
        return False
    return bool(_DOMAIN.fullmatch(arg) or _LITERAL.fullmatch(arg))


def valid_params(params: list[str]) -> bool:
    """Whether every MAIL/RCPT parameter is an RFC 5321 esmtp-param."""
    return all(_PARAM.fullmatch(p) for p in params)


def has_control(text: str) -> bool:
    """Whether `text` holds a control character or a Unicode line/paragraph separator."""
    return any(c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029" for c in text)
