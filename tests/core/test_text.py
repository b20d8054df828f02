"""Odd text made safe for a page, a terminal table and a terminal log."""

from __future__ import annotations

import os

import pytest

from airflow_provider_mltrain.core.text import (
    for_display,
    for_terminal,
    replace_surrogates,
    strip_terminal_controls,
)


def test_undecodable_bytes_become_replacement_characters():
    name = os.fsdecode(b"model-\xff.bin")
    assert replace_surrogates(name) == "model-\ufffd.bin"
    assert replace_surrogates(name).encode("utf-8")


def test_a_page_shows_control_characters_as_replacement_characters():
    assert for_display("a\tb\nc\x1b[31md\x00e\u202ef") == "a\tb\nc\ufffd[31md\ufffde\ufffdf"


def test_a_table_cell_shows_control_characters_escaped_on_one_line():
    assert for_terminal("a\nb\x1b[2J\x07" + os.fsdecode(b"\xff") + "\u202e") == "a\\nb\\e[2J\\x07\\xff\\u202e"
    assert for_terminal("x" * 100, 10) == "x" * 9 + "…"
    assert for_terminal("plain") == "plain"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[1;31mbold red\x1b[0m", "\x1b[1;31mbold red\x1b[0m"),  # colours stay
        ("\x1b[38;5;208morange\x1b[m", "\x1b[38;5;208morange\x1b[m"),
        ("a\x1b[2J\x1b[1;1Hb\x1b[K", "ab"),  # clear screen, move cursor, erase line
        ("\x1b[?1049h\x1b[?25lalt", "alt"),  # alternate screen, hide cursor
        ("\x1b]0;title\x07t", "t"),  # window title, BEL-terminated
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),  # hyperlink, ST-terminated
        ("\x1bPq#0;2;0;0;0\x1b\\x", "x"),  # DCS (sixel)
        ("\x9b2Jc1", "c1"),  # 8-bit CSI
        ("\x1bcreset", "reset"),  # full reset
        ("10%\r20%\r\n", "10%\n20%\n"),  # a progress bar no longer overwrites its line
        ("bell\x07 back\x08space", "bell backspace"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
    ],
)
def test_a_log_keeps_colours_and_drops_every_other_control(raw, shown):
    assert strip_terminal_controls(raw) == shown
