"""Text written by a training script, made safe to show: on a page, in JSON, on a terminal.

A script chooses its file names, arguments, tags, metric names and log lines, so any of them may
hold bytes that are not UTF-8 (Python carries them as surrogate escapes, ``\\udcff``), control
characters, terminal escape sequences (CSI, OSC) or newlines. Readers pass such text through the
function for their medium here instead of printing it as it is.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATES = re.compile("[\ud800-\udfff]")
# C0 and C1 controls but tab and newline, and the bidirectional overrides that reorder what a
# reader sees (a file name that displays as "txt.exe" while being "exe.txt").
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_TABLE_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}

# Terminal sequences in a log: CSI (ESC [ ... final byte, or the 8-bit CSI U+009B), OSC and the
# other string sequences (DCS, SOS, PM, APC: up to BEL or ST), and two-character ESC sequences.
_CSI = re.compile("(?:\x1b\\[|\x9b)([\x30-\x3f]*)([\x20-\x2f]*)([\x40-\x7e]?)")
_STRING_SEQ = re.compile("(?:\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?")
_ESC_OTHER = re.compile("\x1b[\x20-\x2f]*[\x30-\x7e]?")
_LOG_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


def replace_surrogates(text: str) -> str:
    """``text`` encodable as UTF-8: each byte that was not UTF-8 becomes U+FFFD."""
    return _SURROGATES.sub(REPLACEMENT, text) if _SURROGATES.search(text) else text


def for_display(text: str) -> str:
    """``text`` for a page: undecodable bytes, control characters (but tab and newline) and
    direction overrides become U+FFFD. HTML escaping is still the template's job."""
    return _CONTROLS.sub(REPLACEMENT, replace_surrogates(text))


def for_terminal(text: str, max_chars: int | None = None) -> str:
    """``text`` on one terminal line, with nothing a terminal acts on: control characters are
    shown escaped (``\\n``, ``\\e``, ``\\x07``), a byte that was not UTF-8 as ``\\xNN``; longer
    than ``max_chars``, it is cut and ends in ``…``."""
    if _TABLE_UNSAFE.search(text):
        text = _TABLE_UNSAFE.sub(_escape_char, text)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    return text


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if 0xDC80 <= code <= 0xDCFF:  # surrogate escape of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return REPLACEMENT
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def strip_terminal_controls(text: str) -> str:
    """A log for a terminal: colours (SGR, ``ESC [ ... m``) stay; every other escape sequence
    (cursor moves, screen clears, window titles, hyperlinks, ...) and control character is
    removed, and a lone carriage return becomes a line break, so a line can no longer be
    overwritten or hidden by the next."""
    if "\x1b" in text or _LOG_CONTROLS.search(text) or "\r" in text:
        text = _STRING_SEQ.sub("", text)
        text = _CSI.sub(_keep_sgr, text)
        text = _ESC_OTHER.sub(lambda m: m.group() if m.group().startswith("\x1b[") else "", text)
        text = _LOG_CONTROLS.sub("", text)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _keep_sgr(match: re.Match[str]) -> str:
    params, intermediate, final = match.groups()
    if final == "m" and not intermediate and re.fullmatch(r"[0-9;:]*", params):
        return f"\x1b[{params}m"
    return ""
