"""Bad inputs are refused before anything is submitted; a local-path input is cached by content."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from airflow_provider_mltrain import Experiment, ScriptRunConfig
from airflow_provider_mltrain.core.errors import InvalidRunConfig
from airflow_provider_mltrain.core.inputs import (
    Input,
    InputCredentialsMissing,
    InputNotFound,
    UnknownInputScheme,
)
from tests.conftest import s3_options


def _submit(workspace, make_tree, inputs, arguments=()):
    src = make_tree({"train.py": "print('hi')\n"})
    config = ScriptRunConfig(src, "train.py", arguments=list(arguments), inputs=inputs)
    return Experiment(workspace, "bad").submit(config)


def _refused(workspace, make_tree, error, match, inputs, arguments=()):
    with pytest.raises(error, match=match):
        _submit(workspace, make_tree, inputs, arguments)
    assert workspace.store.list_runs() == []  # nothing was submitted


def test_unknown_scheme(workspace, make_tree):
    _refused(workspace, make_tree, UnknownInputScheme, "scheme 'nosuch'", {"train": "nosuch://b/k"})


def test_missing_local_path(workspace, make_tree, tmp_path):
    _refused(workspace, make_tree, InputNotFound, "does not exist", {"train": str(tmp_path / "nope")})


def test_missing_object(workspace, make_tree):
    url = f"s3://mltrain-test/{uuid.uuid4().hex}/train.csv"
    _refused(
        workspace,
        make_tree,
        InputNotFound,
        "does not exist",
        {"train": Input(url, storage_options=s3_options())},
    )


def test_missing_credentials(workspace, make_tree):
    options = {**s3_options(), "key": "no-such-key", "secret": "wrong-secret"}
    url = f"s3://mltrain-test/{uuid.uuid4().hex}/train.csv"
    with pytest.raises(InputCredentialsMissing, match="conn_id") as info:
        _submit(workspace, make_tree, {"train": Input(url, storage_options=options)})
    assert "wrong-secret" not in str(info.value)
    assert workspace.store.list_runs() == []


def test_two_inputs_mounted_at_one_path(workspace, make_tree, tmp_path):
    inputs = {
        "a": Input(str(tmp_path), mode="mount", path_on_compute="/data"),
        "b": Input(str(tmp_path), mode="mount", path_on_compute="/data/"),
    }
    _refused(workspace, make_tree, InvalidRunConfig, "both mounted at /data", inputs)


def test_names_sharing_a_variable(workspace, make_tree, tmp_path):
    _refused(
        workspace, make_tree, InvalidRunConfig, "MLTRAIN_INPUT_TRAIN", {"train": str(tmp_path), "Train": "x"}
    )


def test_a_placeholder_naming_no_input(workspace, make_tree, tmp_path):
    _refused(
        workspace,
        make_tree,
        InvalidRunConfig,
        r"names input 'tset'.*inputs: train",
        {"train": str(tmp_path)},
        arguments=["--data", "${{inputs.tset}}"],
    )


def test_a_placeholder_of_unknown_kind(workspace, make_tree, tmp_path):
    _refused(workspace, make_tree, InvalidRunConfig, "not a placeholder", {}, arguments=["${{input.train}}"])


def test_mounting_an_object_store_url(workspace, make_tree):
    inputs = {"train": Input("s3://mltrain-test/x", mode="mount", storage_options=s3_options())}
    _refused(workspace, make_tree, InvalidRunConfig, "mode='download'", inputs)


def test_a_local_path_is_cached_until_it_changes(workspace, make_tree, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("one")
    first = _submit(workspace, make_tree, {"data": str(data)})
    second = _submit(workspace, make_tree, {"data": str(data)})
    (a,), (b,) = first.get_details()["inputDatasets"], second.get_details()["inputDatasets"]
    assert not a["cache_hit"] and a["fetched_bytes"] == 3
    assert b["cache_hit"] and b["fetched_bytes"] == 0 and b["sha256"] == a["sha256"]
    (data / "x.txt").write_text("two!")
    third = _submit(workspace, make_tree, {"data": str(data)})
    (c,) = third.get_details()["inputDatasets"]
    assert not c["cache_hit"] and c["sha256"] != a["sha256"]
    for run in (first, second, third):
        run.wait_for_completion()


def test_a_script_that_changes_its_cached_input_does_not_change_the_next_runs(workspace, make_tree, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("one")
    script = (
        "import os\n"
        "p = os.path.join(os.environ['MLTRAIN_INPUT_DATA'], 'x.txt')\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/seen.txt', 'w').write(open(p).read())\n"
        "try:\n"
        "    open(p, 'a').write('+changed')\n"
        "except OSError:\n"
        "    pass\n"
    )
    src = make_tree({"train.py": script})
    config = ScriptRunConfig(src, "train.py", inputs={"data": str(data)})
    for i in range(2):
        run = Experiment(workspace, "bad").submit(config)
        assert run.wait_for_completion()["status"] == "Completed", run.get_log_tail()
        assert run.download_file("outputs/seen.txt", tmp_path / f"dl{i}").read_text() == "one"


def test_a_big_object_is_fetched_in_ranges_whole_and_hashed(workspace, make_tree):
    import hashlib
    import os

    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    key = f"mltrain-test/{uuid.uuid4().hex}/big.bin"
    body = os.urandom(40 << 20)  # 3 ranges, the last one short
    fs.pipe(key, body)
    try:
        run = _submit(workspace, make_tree, {"big": Input(f"s3://{key}", storage_options=s3_options())})
        (detail,) = run.get_details()["inputDatasets"]
        assert detail["fetched_bytes"] == len(body) and detail["size"] == len(body)
        file_hash = hashlib.sha256(body).hexdigest()
        assert detail["sha256"] == hashlib.sha256(f"big.bin\0{file_hash}\n".encode()).hexdigest()
        assert Path(detail["path"]).read_bytes() == body
        run.wait_for_completion()
    finally:
        fs.rm(key)


def _count_ranges(monkeypatch) -> list[tuple[int, int]]:
    """Every range read over the plain HTTP connections (the s3fs path reads none)."""
    from airflow_provider_mltrain.core import inputs as run_inputs

    read: list[tuple[int, int]] = []
    real = run_inputs._RangeReader._write

    def counted(self, conn, fd, start, end):
        read.append((start, end))
        return real(self, conn, fd, start, end)

    monkeypatch.setattr(run_inputs._RangeReader, "_write", counted)
    return read


def test_a_big_s3_object_comes_in_ranges_over_plain_connections(workspace, make_tree, monkeypatch):
    """The ranges come with s3fs's presigned URL over connections of their own, exactly, and a
    connection dropped mid-range is opened again and the range written again."""
    import os

    from airflow_provider_mltrain.core import inputs as run_inputs

    read = _count_ranges(monkeypatch)
    key, body, content_hash = _big_object(40 << 20)
    real = run_inputs._RangeReader._write
    dropped = []

    def drop_once(self, conn, fd, start, end):
        if start == 16 << 20 and not dropped:
            dropped.append(start)
            os.pwrite(fd, b"half a range, then the connection drops", start)
            conn.close()
            raise ConnectionResetError("dropped by the test")
        return real(self, conn, fd, start, end)

    monkeypatch.setattr(run_inputs._RangeReader, "_write", drop_once)
    run = _submit(workspace, make_tree, {"big": Input(f"s3://{key}", storage_options=s3_options())})
    (detail,) = run.get_details()["inputDatasets"]
    assert Path(detail["path"]).read_bytes() == body and detail["sha256"] == content_hash
    assert dropped == [16 << 20]
    mib = 1 << 20
    assert sorted(read) == [(0, 16 * mib), (16 * mib, 32 * mib), (32 * mib, 40 * mib)]
    run.wait_for_completion()


def test_ranges_the_plain_path_cannot_send_go_through_s3fs(workspace, make_tree, monkeypatch):
    """A request-payer read needs a header a presigned GET does not carry: s3fs reads it."""
    read = _count_ranges(monkeypatch)
    key, body, content_hash = _big_object(20 << 20)
    options = {**s3_options(), "requester_pays": True}
    run = _submit(workspace, make_tree, {"big": Input(f"s3://{key}", storage_options=options)})
    (detail,) = run.get_details()["inputDatasets"]
    assert Path(detail["path"]).read_bytes() == body and detail["sha256"] == content_hash
    assert read == []
    run.wait_for_completion()


def test_an_object_gone_during_its_fetch_is_a_clear_error(workspace, make_tree, monkeypatch):
    """Listed, then deleted before its ranges are read: nothing submitted, no cached copy left."""
    import s3fs

    from airflow_provider_mltrain.core import inputs as run_inputs

    key, _body, _hash = _big_object(20 << 20)
    real = run_inputs._RangeReader.for_object

    def delete_first(fs, src):
        s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True).rm(key)
        return real(fs, src)

    monkeypatch.setattr(run_inputs._RangeReader, "for_object", staticmethod(delete_first))
    _refused(
        workspace,
        make_tree,
        InputNotFound,
        "does not exist",
        {"big": Input(f"s3://{key}", storage_options=s3_options())},
    )
    cache = run_inputs.cache_root(workspace.root)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []  # no copy, no temporary folder


def _big_object(size: int) -> tuple[str, bytes, str]:
    """An object of ``size`` random bytes on the test S3 server: its key, body and the content
    hash a run records for it as a one-file input named big.bin."""
    import hashlib
    import os

    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    key = f"mltrain-test/{uuid.uuid4().hex}/big.bin"
    body = os.urandom(size)
    fs.pipe(key, body)
    file_hash = hashlib.sha256(body).hexdigest()
    return key, body, hashlib.sha256(f"big.bin\0{file_hash}\n".encode()).hexdigest()


def test_a_big_first_fetch_is_hashed_after_the_run_starts(workspace, make_tree, monkeypatch):
    """Above HASH_AFTER_START the first fetch writes the copy unhashed (the script starts sooner);
    a thread records the hash on the run and in the cache, so the next run has it from the start."""
    import json

    from airflow_provider_mltrain.core import inputs as run_inputs

    monkeypatch.setattr(run_inputs, "HASH_AFTER_START", 1 << 20)
    key, body, content_hash = _big_object(20 << 20)  # in ranges
    big = {"big": Input(f"s3://{key}", storage_options=s3_options())}
    first = _submit(workspace, make_tree, big)
    first.wait_for_completion()
    (detail,) = first.get_details()["inputDatasets"]
    assert detail["sha256"] == content_hash and detail["fetched_bytes"] == len(body)
    assert Path(detail["path"]).read_bytes() == body
    meta = json.loads((Path(detail["path"]).parents[1] / "meta.json").read_text())
    assert meta["sha256"] == content_hash
    again = _submit(workspace, make_tree, big)
    (hit,) = again.get_details()["inputDatasets"]  # read at once: recorded at submission
    assert hit["cache_hit"] and hit["sha256"] == content_hash
    again.wait_for_completion()


def test_a_hash_the_submitter_never_recorded_is_filled_at_the_end(workspace, make_tree, monkeypatch):
    """The submitting process died before its hashing thread ended (here: it never started one):
    the run's end hashes the cached copy, and a later cache hit hashes it again for the cache."""
    from airflow_provider_mltrain.core import inputs as run_inputs

    monkeypatch.setattr(run_inputs, "HASH_AFTER_START", 1 << 20)
    key, _body, content_hash = _big_object(3 << 20)
    big = {"big": Input(f"s3://{key}", storage_options=s3_options())}
    with monkeypatch.context() as m:
        m.setattr(run_inputs, "hash_after_start", lambda store, run_id, resolved: None)
        run = _submit(workspace, make_tree, big)
        (at_start,) = run.get_details()["inputDatasets"]
        assert at_start["sha256"] is None and not at_start["cache_hit"]  # not hashed on the way in
        run.wait_for_completion()
    (detail,) = run.get_details()["inputDatasets"]
    assert detail["sha256"] == content_hash
    again = _submit(workspace, make_tree, big)
    again.wait_for_completion()
    (hit,) = again.get_details()["inputDatasets"]
    assert hit["cache_hit"] and hit["sha256"] == content_hash


def test_the_plain_path_verifies_https_as_botocore_would_and_keeps_out_of_proxies(monkeypatch, tmp_path):
    """verify=False, a CA bundle file, AWS_CA_BUNDLE; a CA folder and a proxy the endpoint is not
    exempt from keep the s3fs path (None)."""
    import ssl
    from types import SimpleNamespace

    import s3fs

    from airflow_provider_mltrain.core.inputs import _RangeReader

    context = _RangeReader._ssl_context
    assert context(SimpleNamespace(client_kwargs={"verify": False})).verify_mode == ssl.CERT_NONE
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    assert context(SimpleNamespace(client_kwargs={"verify": bundle})).verify_mode == ssl.CERT_REQUIRED
    assert context(SimpleNamespace(client_kwargs={"verify": str(tmp_path)})) is None
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path))
    assert context(SimpleNamespace(client_kwargs={})) is None
    monkeypatch.setenv("AWS_CA_BUNDLE", bundle)
    assert context(SimpleNamespace(client_kwargs={})).verify_mode == ssl.CERT_REQUIRED
    monkeypatch.delenv("AWS_CA_BUNDLE")
    assert context(SimpleNamespace(client_kwargs={})).verify_mode == ssl.CERT_REQUIRED  # the system's

    fs = s3fs.S3FileSystem(**s3_options(), skip_instance_cache=True)
    assert _RangeReader.for_object(fs, "mltrain-test/any.bin") is not None
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "")
    assert _RangeReader.for_object(fs, "mltrain-test/any.bin") is None
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert _RangeReader.for_object(fs, "mltrain-test/any.bin") is not None
