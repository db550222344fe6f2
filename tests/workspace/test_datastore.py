from __future__ import annotations

import os
import pathlib
import threading

import pytest

from airflow_mlpipe.errors import NotFoundError
from airflow_mlpipe.workspace.datastore import LocalDatastore, check_key, check_prefix, open_datastore
from airflow_mlpipe.workspace.s3 import S3Datastore

from .conftest import make_tree


@pytest.mark.parametrize("key", ["/abs", "a/../b", "..", "a//b", "a/", "", "./a", "a\\b"])
def test_bad_keys_are_rejected(key):
    with pytest.raises(ValueError):
        check_key(key)


def test_prefix_normalisation():
    assert check_prefix("") == ""
    assert check_prefix("a/b/") == "a/b"
    with pytest.raises(ValueError):
        check_prefix("/a")


def test_bad_keys_rejected_by_backends(datastore):
    for key in ("/etc/passwd", "a/../../x", "a//b"):
        with pytest.raises(ValueError):
            datastore.write_bytes(key, b"x")
        with pytest.raises(ValueError):
            datastore.read_bytes(key)


def test_bytes_json_exists_delete(datastore):
    datastore.write_bytes("a/b/c.bin", b"\x00\x01")
    assert datastore.read_bytes("a/b/c.bin") == b"\x00\x01"
    assert datastore.exists("a/b/c.bin") and not datastore.exists("a/b")
    datastore.put_json("a/doc.json", {"x": [1, 2], "é": "ü"})
    assert datastore.get_json("a/doc.json") == {"x": [1, 2], "é": "ü"}
    datastore.put_json("a/doc.json", {"x": 3})
    assert datastore.get_json("a/doc.json") == {"x": 3}
    datastore.delete("a/b/c.bin")
    datastore.delete("a/b/c.bin")  # missing: not an error
    assert not datastore.exists("a/b/c.bin")
    with pytest.raises(NotFoundError):
        datastore.read_bytes("a/b/c.bin")
    assert datastore.get_json_or_none("nothing.json") is None


def test_list_and_list_dirs(datastore):
    for key in ("p/x/1", "p/x/2", "p/y/3", "p/z", "pq/4"):
        datastore.write_bytes(key, key.encode())
    assert [i.key for i in datastore.list("p")] == ["p/x/1", "p/x/2", "p/y/3", "p/z"]
    assert [i.key for i in datastore.list("p/")] == ["p/x/1", "p/x/2", "p/y/3", "p/z"]
    assert {i.key: i.size for i in datastore.list("p/x")} == {"p/x/1": 5, "p/x/2": 5}
    assert all(i.mtime for i in datastore.list("p"))
    assert datastore.list_dirs("p") == ["x", "y"]
    assert datastore.list_dirs("") == ["p", "pq"]
    assert list(datastore.list("missing")) == [] and datastore.list_dirs("missing") == []


def test_copy(datastore):
    datastore.write_bytes("src/f", b"data")
    datastore.copy("src/f", "dst/g")
    assert datastore.read_bytes("dst/g") == b"data"
    with pytest.raises(NotFoundError):
        datastore.copy("src/none", "dst/h")


def test_create_json_is_create_if_absent(datastore):
    assert datastore.create_json("locks/one.json", {"who": 1})
    assert not datastore.create_json("locks/one.json", {"who": 2})
    assert datastore.get_json("locks/one.json") == {"who": 1}


def test_create_json_race(datastore):
    winners = []
    barrier = threading.Barrier(12)

    def claim(i):
        barrier.wait()
        if datastore.create_json("race/key.json", {"who": i}):
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert datastore.get_json("race/key.json") == {"who": winners[0]}
    assert [i.key for i in datastore.list("race")] == ["race/key.json"]  # no temp files visible


def test_conditional_put(datastore):
    assert datastore.get_json_with_etag("cas.json") is None
    assert datastore.put_json_if("cas.json", {"n": 1}, None)
    assert not datastore.put_json_if("cas.json", {"n": 9}, None)
    doc, etag = datastore.get_json_with_etag("cas.json")
    assert doc == {"n": 1}
    assert datastore.put_json_if("cas.json", {"n": 2}, etag)
    assert not datastore.put_json_if("cas.json", {"n": 3}, etag)  # stale etag
    assert datastore.get_json("cas.json") == {"n": 2}


def test_upload_download_dir_with_progress(datastore, tmp_path):
    src = make_tree(tmp_path / "src", {"a.txt": "alpha", "sub/b.bin": os.urandom(3000), "sub/deep/c": "c"})
    seen = []
    infos = datastore.upload_dir(src, "up/dir", progress=seen.append)
    assert sorted(i.key for i in infos) == ["up/dir/a.txt", "up/dir/sub/b.bin", "up/dir/sub/deep/c"]
    assert sum(seen) == 3006
    dest = tmp_path / "dest"
    got = []
    datastore.download_dir("up/dir", dest, progress=got.append)
    assert sum(got) == 3006
    for rel in ("a.txt", "sub/b.bin", "sub/deep/c"):
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    datastore.download_file("up/dir/a.txt", tmp_path / "one" / "a.txt")
    assert (tmp_path / "one" / "a.txt").read_text() == "alpha"
    assert datastore.download_many([("up/dir/a.txt", tmp_path / "m/a"), ("up/dir/sub/deep/c", tmp_path / "m/c")])
    assert (tmp_path / "m/c").read_text() == "c"
    assert datastore.delete_prefix("up") == 3
    assert list(datastore.list("up")) == []


def test_large_file_multipart(ds_target, tmp_path):
    uri, options = ds_target
    if options:
        options.update(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    ds = open_datastore(uri, **options)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024 + 17))
    seen = []
    ds.upload_file(big, "big/file.bin", progress=seen.append)
    assert sum(seen) == big.stat().st_size
    ds.download_file("big/file.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_missing_download_raises(datastore, tmp_path):
    with pytest.raises(NotFoundError):
        datastore.download_file("none/here", tmp_path / "x")


def test_delete_prefix_refuses_root(datastore):
    with pytest.raises(ValueError):
        datastore.delete_prefix("")


def test_local_path(datastore, backend):
    datastore.write_bytes("k/f", b"1")
    path = datastore.local_path("k/f")
    if backend == "local":
        assert path.read_bytes() == b"1"
    else:
        assert path is None


def test_open_datastore_uris(tmp_path, monkeypatch):
    local = open_datastore(tmp_path.as_uri())
    assert isinstance(local, LocalDatastore) and local.root == tmp_path
    assert isinstance(open_datastore(str(tmp_path)), LocalDatastore)
    for bad in ("relative/dir", "ftp://x/y", "s3://", "file://host/x"):
        with pytest.raises(ValueError):
            open_datastore(bad)
    with pytest.raises(TypeError):
        open_datastore(tmp_path.as_uri(), colour="red")
    monkeypatch.setenv("MLPIPE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = open_datastore("s3://bucket/some/prefix/", aws_secret_access_key="SECRET123", region_name=None)
    assert isinstance(s3, S3Datastore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "some/prefix", "http://127.0.0.1:9")
    assert s3.uri == "s3://bucket/some/prefix" and s3.uri_for("a/b") == "s3://bucket/some/prefix/a/b"
    assert "SECRET123" not in repr(s3) and "SECRET123" not in str(vars(s3).get("endpoint_url"))
    assert open_datastore("s3://bucket", endpoint_url="http://e").endpoint_url == "http://e"


@pytest.mark.integration
def test_s3_client_config(moto_s3_options):
    ds = S3Datastore("b", "p", max_concurrency=16, max_attempts=7, **moto_s3_options)
    config = ds.client.meta.config
    assert config.retries == {"total_max_attempts": 7, "mode": "standard"}
    assert config.max_pool_connections >= 16
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


@pytest.mark.integration
def test_s3_missing_bucket(moto_s3_options):
    ds = S3Datastore("no-such-bucket-here", "p", **moto_s3_options)
    with pytest.raises(NotFoundError, match="bucket"):
        ds.read_bytes("x")


def test_local_temp_files_are_hidden(tmp_path):
    ds = LocalDatastore(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".mlpipe-tmp-abc-x").write_bytes(b"")
    ds.write_bytes("d/real", b"1")
    assert [i.key for i in ds.list("d")] == ["d/real"]
    assert pathlib.Path(tmp_path / "d" / "real").read_bytes() == b"1"
