"""The one redaction rule: no secret leaves the process in any form a server or a library may give it.

A :class:`Redactor` built from the pull's resolved secrets replaces each secret in every encoding it may
come back in. Redact the whole text first, truncate afterwards. The encodings are named
(:data:`ENCODINGS`), so that a cursor can keep a secret as a marker naming the one that reproduces it
(``fetch/sealing.py``).
Design: docs/design/http-and-secrets.md#redaction
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import string
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

REDACTED = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values would shred every message; they are not secrets worth the name."""

T = TypeVar("T")
Encoder = Callable[[str], str]

_ALNUM = string.ascii_letters + string.digits


def percent_encoder(safe: str, *, space: str = "%20", lower: bool = False) -> Encoder:
    """Percent-encoding of the UTF-8 bytes, keeping letters, digits and ``safe`` as they are: every URL
    encoder of every language is one of these (they differ in what they keep, how they write a
    space and the case of the hex digits)."""
    keep = frozenset((_ALNUM + safe).encode())
    hexes = "%{:02x}" if lower else "%{:02X}"
    table = [chr(b) if b in keep else space if b == 0x20 else hexes.format(b) for b in range(256)]

    def encode(text: str) -> str:
        return "".join([table[b] for b in text.encode("utf-8", "surrogatepass")])

    return encode


def _js_escape(text: str) -> str:
    """JavaScript's legacy ``escape()``: Latin-1 as ``%XX``, the rest as ``%uXXXX`` (UTF-16 units)."""
    data = text.encode("utf-16-be", "surrogatepass")
    units = (int.from_bytes(data[i : i + 2]) for i in range(0, len(data), 2))
    return "".join(
        chr(u) if u < 128 and chr(u) in _JS_ESCAPE_KEEPS else f"%{u:02X}" if u < 256 else f"%u{u:04X}" for u in units
    )


_JS_ESCAPE_KEEPS = frozenset(_ALNUM + "@*_+-./")


def _json(ascii_only: bool, slash: bool = False, upper: bool = False) -> Encoder:
    def encode(text: str) -> str:
        out = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        if upper:  # System.Text.Json and others write \u00FC
            out = re.sub(r"\\u[0-9a-f]{4}", lambda m: m[0].upper().replace("\\U", "\\u"), out)
        return out.replace("/", "\\/") if slash else out

    return encode


def _b64(encode: Callable[[bytes], bytes], pad: bool) -> Encoder:
    def encoder(text: str) -> str:
        out = encode(text.encode("utf-8", "surrogatepass")).decode()
        return out if pad else out.rstrip("=")

    return encoder


def _b64_middle(encode: Callable[[bytes], bytes], k: int, text: str) -> str:
    """The characters of ``encode(prefix + text)`` (``len(prefix) == k``) that depend on ``text``
    alone: from the first whose 6 bits all lie in ``text`` to the last."""
    data = text.encode("utf-8", "surrogatepass")
    out = encode(bytes(k) + data).decode()
    return out[-(-8 * k // 6) : 8 * (k + len(data)) // 6]


_URL_SPELLINGS: dict[str, tuple[str, str]] = {
    # name: (kept besides letters and digits, space)
    "url": ("-._~", "%20"),  # RFC 3986 unreserved: Python quote(safe=""), PHP rawurlencode, Uri.EscapeDataString
    "path": ("-._~/", "%20"),  # Python quote() with its default safe="/"
    "form": ("-._~", "+"),  # Python quote_plus / urlencode, Go QueryEscape, Ruby CGI.escape
    "component": ("-_.!~*'()", "%20"),  # JavaScript encodeURIComponent
    "uri": ("-_.!~*'();/?:@&=+$,#", "%20"),  # JavaScript encodeURI
    "www_form": ("-._*", "+"),  # WHATWG URLSearchParams, HTML forms, Java URLEncoder ('~' escaped)
    "php_form": ("-._", "+"),  # PHP urlencode
    "dotnet": ("-_.!*()", "+"),  # .NET HttpUtility.UrlEncode (lower-case hex) and WebUtility.UrlEncode
    "go_path": ("-._~$&+,:;=@", "%20"),  # Go url.PathEscape
}

ENCODINGS: dict[str, Encoder] = {"": lambda text: text}
"""Every spelling the redactor knows, by name: ``""`` is the text itself. A name never changes
meaning (stored cursors name them); ``<name>_lower`` is the same with lower-case hex digits."""
for _name, (_safe, _space) in _URL_SPELLINGS.items():
    ENCODINGS[_name] = percent_encoder(_safe, space=_space)
    ENCODINGS[f"{_name}_lower"] = percent_encoder(_safe, space=_space, lower=True)
ENCODINGS.update(
    {
        "js_escape": _js_escape,
        "json": _json(False),
        "json_slash": _json(False, slash=True),
        "json_ascii": _json(True),
        "json_ascii_slash": _json(True, slash=True),
        "json_ascii_upper": _json(True, upper=True),
        "html": html.escape,
        "html_text": lambda text: html.escape(text, quote=False),
        "base64": _b64(base64.b64encode, pad=True),
        "base64_nopad": _b64(base64.b64encode, pad=False),
        "base64url": _b64(base64.urlsafe_b64encode, pad=True),
        "base64url_nopad": _b64(base64.urlsafe_b64encode, pad=False),
        "hex": lambda text: text.encode("utf-8", "surrogatepass").hex(),
        "hex_upper": lambda text: text.encode("utf-8", "surrogatepass").hex().upper(),
    }
)
# A value encoded twice by the same encoder: an encoded link carried as a parameter of another link.
# (The first three names predate the rest: ``url_twice_lower`` is ``url_lower`` applied twice.)
_PERCENT = [name for name in ENCODINGS if name.split("_lower")[0] in _URL_SPELLINGS] + ["js_escape"]
for _name in _PERCENT:
    _twice = f"{_name[: -len('_lower')]}_twice_lower" if _name.endswith("_lower") else f"{_name}_twice"
    ENCODINGS[_twice] = (lambda once: lambda text: once(once(text)))(ENCODINGS[_name])
# base64 of a longer text (an opaque cursor holding the secret) spells the secret differently at each
# of the three byte alignments it can start at; the characters that encode the secret's bits alone
# are the same whatever surrounds it: ``base64_at<k>`` is that stable middle for k bytes before it.
for _alphabet, _encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
    for _k in range(3):
        ENCODINGS[f"{_alphabet}_at{_k}"] = (lambda encode, k: lambda text: _b64_middle(encode, k, text))(_encode, _k)


def secret_forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` this project, a server or a library may produce: each of
    :data:`ENCODINGS` of the secret, of each of its lines, and of it with CRLF line ends."""
    pieces = {secret.strip("\r\n")} | {line.strip() for line in secret.splitlines()}
    forms: set[str] = set()
    for piece in pieces:
        if len(piece) < MIN_SECRET_LENGTH:
            continue
        for text in {piece, piece.replace("\n", "\r\n")}:
            forms.update(encode(text) for encode in ENCODINGS.values())
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def literal_pattern(texts: Iterable[str], *, ignore_case: bool) -> re.Pattern[str] | None:
    """One regex matching any of ``texts``, the longest at a position, as a trie (``a(?:bc|d)``):
    an alternation of fifty-odd literals costs a try of each at every position of the text; a trie
    costs one character class there. None when there is nothing to match."""
    fold = str.lower if ignore_case else str
    root: dict[str, Any] = {}
    for text in texts:
        node = root
        for char in text:
            key = fold(char) if len(fold(char)) == 1 else char  # the case-folded trie is the same trie
            node = node.setdefault(key, {})
        node[""] = {}  # a text ends here
    if not root:
        return None
    # Built bottom-up without recursion: a secret file may be 64 KiB, so the trie may be deep.
    order: list[dict[str, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(child for key, child in node.items() if key)
    regex: dict[int, str] = {}
    for node in reversed(order):
        branches = [re.escape(key) + regex[id(child)] for key, child in node.items() if key]
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")" if branches else ""
        # An end here is the shorter match: tried only when no longer one matches.
        regex[id(node)] = (f"(?:{body})?" if body else "") if "" in node else body
    return re.compile(regex[id(root)], re.IGNORECASE if ignore_case else 0)


_ESCAPE = re.compile(
    r"%u[0-9A-Fa-f]{4}|%[0-9A-Fa-f]{2}|&#[xX]?[0-9A-Fa-f]+;?|&[A-Za-z][A-Za-z0-9]*;|\\u[0-9A-Fa-f]{4}|\\/"
)
_PERCENT_U = re.compile(r"%u([0-9A-Fa-f]{4})")
_JSON_U = re.compile(r"\\u([0-9A-Fa-f]{4})")


def unescaped(text: str) -> str:
    """``text`` with the escapes servers use undone (percent-escapes of any byte, ``%uXXXX``, HTML
    character references, JSON ``\\uXXXX`` and ``\\/``), up to three layers deep: the net under the
    named spellings, for an encoder that escapes more than any list can name. ``text`` itself (the
    same object) when it holds no escape, which is the common case and costs one search."""
    if _ESCAPE.search(text) is None:
        return text
    out = text
    for _ in range(3):
        decoded = _JSON_U.sub(lambda m: chr(int(m[1], 16)), out).replace("\\/", "/")
        decoded = _PERCENT_U.sub(lambda m: chr(int(m[1], 16)), decoded)
        decoded = html.unescape(urllib.parse.unquote(decoded, errors="replace"))
        if decoded == out:
            break
        out = decoded
    return out


@functools.lru_cache(maxsize=256)
def _redaction_patterns(secrets: frozenset[str]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    """The patterns for one set of secrets, built once per process: every poller evaluation and pull
    builds a redactor, and the same secrets compile to the same patterns (tens of milliseconds)."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= secret_forms(secret)
    # The longest match first, so a secret that contains another is replaced whole.
    pattern = literal_pattern(forms, ignore_case=True)
    # Most text holds no secret: a case-sensitive search of the case-folded text says so five
    # times faster than the case-insensitive one (see bench/redaction_bench.py).
    return pattern, literal_pattern({form.casefold() for form in forms}, ignore_case=False)


EMAIL_REMOVED = "[email]"
_EMAIL_ADDRESS = re.compile(
    # The '@' also as servers escape it: percent (an address echoed from a query), JSON, HTML.
    r"[A-Za-z0-9._%+-]+(?:@|%40|\\u0040|&#0*64;|&#x0*40;|&commat;)"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+",
    re.IGNORECASE,
)


def without_email_addresses(text: str) -> str:
    """``text`` with every email address replaced by ``[email]``: what a vendor's error response may
    say about a person, kept out of what reaches Dagster while event content is not shown
    (``ContentPolicy.vendor_text``; docs/compliance.md). A name or a vendor's user id is not recognized."""
    return _EMAIL_ADDRESS.sub(EMAIL_REMOVED, text)


class Redactor:
    """Replaces every known secret, in every form, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets = frozenset(s for s in secrets if s)
        self._pattern, self._probe = _redaction_patterns(self._secrets)

    def plus(self, secrets: Iterable[str]) -> Redactor:
        """A redactor of these secrets too: for text that may hold a value secret only where it is
        quoted (a signed URL's signature, echoed in the file host's error body)."""
        return Redactor(self._secrets | frozenset(secrets))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: object) -> str:
        out = str(text)
        if self._pattern is None:
            return out
        if self._holds(out):
            out = self._pattern.sub(REDACTED, out)
        plain = unescaped(out)
        if plain is not out and self._holds(plain) and self._pattern.search(plain) is not None:
            # An escaped spelling no encoder names (every byte percent-encoded, a character reference
            # for each character): shown decoded, with the secret redacted.
            return self._pattern.sub(REDACTED, plain)
        return out

    def _holds(self, text: str) -> bool:
        return self._probe is not None and self._probe.search(text.casefold()) is not None

    def _finds_as_is(self, text: str) -> bool:
        return self._pattern is not None and self._holds(text) and self._pattern.search(text) is not None

    def finds(self, text: str) -> bool:
        """Whether ``text`` holds a secret in any form, escaped in any way :func:`unescaped` undoes."""
        if self._pattern is None:
            return False
        plain = unescaped(text)
        return self._finds_as_is(text) or (plain is not text and self._finds_as_is(plain))

    def scrub(self, value: T) -> T:
        """``value`` (JSON-like: text, mappings and lists of them) with every text redacted, keys
        included; anything else (numbers, booleans, None, other objects) is kept as it is."""
        if self._pattern is None:
            return value
        return self._scrub(value)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if type(value) in (list, tuple):  # not a named tuple: other objects are kept as they are
            return [self._scrub(v) for v in value]
        return value


def _at_level(level: str) -> Callable[..., None]:
    """A logger method of :class:`RedactingLogger` for ``level``."""

    def emit(self: RedactingLogger, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        self._emit(level, msg, args, exc_info)

    return emit


class RedactingLogger:
    """A logger whose every line (with its arguments and any traceback) is redacted before it is
    handed on: what the engine gives a puller (``PullContext.logger``), so a custom puller's lines
    are as safe as the engine's own."""

    def __init__(self, logger: Any, redact: Redactor):
        self.logger = logger
        self.redact = redact

    def _emit(self, level: str, msg: object, args: tuple[Any, ...], exc_info: Any = None) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(map(str, (msg, *args)))
        if exc_info:
            error = exc_info if isinstance(exc_info, BaseException) else None
            text += "\n" + ("".join(traceback.format_exception(error)) if error else traceback.format_exc())
        getattr(self.logger, level)(self.redact(text))

    debug = _at_level("debug")
    info = _at_level("info")
    warning = warn = _at_level("warning")
    error = _at_level("error")
    critical = _at_level("critical")

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **_: Any) -> None:
        self._emit("error", msg, args, exc_info)

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None, **_: Any) -> None:
        name = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}.get(level - level % 10, "info")
        self._emit(name if level >= 10 else "debug", msg, args, exc_info)
