"""LogFollower: lines by offset, a chunk at a time, whatever the log's size between two polls."""

from __future__ import annotations

from airflow_provider_mltrain.core.run import LogFollower


class GrowingLog:
    """Stands in for a Run: read_log over bytes that grow, recording how much each call asked."""

    def __init__(self) -> None:
        self.data = b""
        self.asked: list[int | None] = []

    def read_log(self, offset: int = 0, length: int | None = None) -> bytes:
        self.asked.append(length)
        return self.data[offset : None if length is None else offset + length]


def test_a_log_that_grew_a_lot_is_read_a_chunk_at_a_time_and_every_line_comes_once():
    log = GrowingLog()
    follower = LogFollower(log, chunk=100)  # type: ignore[arg-type]
    expected = [f"line {i} " + "x" * (i % 37) for i in range(500)]
    log.data = ("\n".join(expected[:300]) + "\n").encode()
    first = follower.read()
    assert follower.behind and len(first) < 300  # one chunk, not the whole log
    got = first + list(follower.lines())
    assert got == expected[:300] and not follower.behind
    log.data += ("\n".join(expected[300:])).encode()  # the last line never ended
    got += list(follower.lines(final=False))
    assert got == expected[:499]
    got += list(follower.lines(final=True))
    assert got == expected
    assert all(n == 100 for n in log.asked)  # never asked for more than a chunk


def test_a_line_longer_than_a_chunk_comes_out_in_pieces_not_held_whole():
    log = GrowingLog()
    follower = LogFollower(log, chunk=64)  # type: ignore[arg-type]
    log.data = b"a" * 1000 + b"\nend\n"
    pieces = list(follower.lines())
    assert "".join(pieces[:-1]) == "a" * 1000 and pieces[-1] == "end"
    assert len(follower._partial) <= 64
