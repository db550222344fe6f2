"""airflow_mlpipe/rules.py: the relative-path rule, safe tar extraction (real tar files) and the registry
reference grammar."""

from __future__ import annotations

import io
import os
import pathlib
import tarfile

import pytest

from airflow_mlpipe.rules import (
    ArchiveError,
    RefSyntaxError,
    RegistryRef,
    extract_tar,
    is_plain_segment,
    parse_name_version,
    parse_registry_ref,
    parse_registry_uri,
    path_parts,
    relative_parts,
)

# -- relative paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, parts",
    [
        ("train.py", ["train.py"]),
        ("src/train.py", ["src", "train.py"]),
        ("src\\train.py", ["src", "train.py"]),
        ("./a//b", [".", "a", "", "b"]),
        ("outputs/{pipeline}/{run_id}", ["outputs", "{pipeline}", "{run_id}"]),
        ("a..b/c.", ["a..b", "c."]),
    ],
)
def test_relative_parts_of_a_relative_path(value, parts):
    assert relative_parts(value) == parts


@pytest.mark.parametrize(
    "value", ["", "/etc/passwd", "\\server\\share", "C:\\x", "C:/x", "c:x", "..", "../x", "a/../b", "a\\..\\b",
              "a/..", None, 3],
)
def test_relative_parts_refuses_what_leaves_the_root(value):
    assert relative_parts(value) is None


def test_path_parts_splits_at_both_separators():
    assert path_parts("a/b\\c") == ["a", "b", "c"]
    assert path_parts("") == [""]


@pytest.mark.parametrize("segment, plain", [("a", True), ("a.b", True), ("...", True), ("", False), (".", False),
                                            ("..", False), ("a/b", False), ("a\\b", False), ("a\x00", False),
                                            (None, False)])
def test_is_plain_segment(segment, plain):
    assert is_plain_segment(segment) is plain


# -- tar extraction ---------------------------------------------------------------------------------------


def _archive(path: pathlib.Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> pathlib.Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def test_extract_tar_writes_files_and_directories(tmp_path):
    folder = tarfile.TarInfo("pkg")
    folder.type = tarfile.DIRTYPE
    archive = _archive(tmp_path / "ok.tar.gz", [(folder, None), _file("pkg/a.py", b"A"), _file("main.py", b"M")])
    names = extract_tar(archive, tmp_path / "out" / "deep")
    assert sorted(names) == ["main.py", "pkg/a.py"]
    assert (tmp_path / "out/deep/pkg/a.py").read_bytes() == b"A"
    with tarfile.open(archive) as tar:  # an open TarFile too, uncompressed archives too
        assert sorted(extract_tar(tar, tmp_path / "again")) == ["main.py", "pkg/a.py"]
    plain = _archive(tmp_path / "plain.tar", [_file("x.txt")], mode="w")
    assert extract_tar(str(plain), tmp_path / "plain") == ["x.txt"]


@pytest.mark.parametrize(
    "member, why",
    [
        (_file("../x"), "'..' part"),
        (_file("a/../../x"), "'..' part"),
        (_file("/abs"), "absolute path"),
        (_special("out", tarfile.SYMTYPE, "../../outside"), "is a link"),
        (_special("etc", tarfile.SYMTYPE, "/etc"), "is a link"),
        (_special("inside", tarfile.SYMTYPE, "ok.txt"), "is a link"),
        (_special("hard", tarfile.LNKTYPE, "ok.txt"), "is a link"),
        (_special("tty", tarfile.CHRTYPE), "not a regular file or a directory"),
        (_special("disk", tarfile.BLKTYPE), "not a regular file or a directory"),
        (_special("pipe", tarfile.FIFOTYPE), "not a regular file or a directory"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "symlink-in", "hardlink", "chr",
         "blk", "fifo"],
)
def test_extract_tar_refuses_the_whole_archive(tmp_path, member, why):
    archive = _archive(tmp_path / "bad.tar.gz", [_file("ok.txt"), member])
    dest = tmp_path / "box" / "dest"
    with pytest.raises(ArchiveError, match=why) as refused:
        extract_tar(archive, dest)
    assert repr(member[0].name) in str(refused.value)
    assert list(dest.iterdir()) == []  # checked before anything is written: not even ok.txt
    assert not (tmp_path / "box" / "x").exists() and not (tmp_path / "x").exists()


def test_extract_tar_refuses_a_path_through_a_link_already_in_dest(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "link")
    archive = _archive(tmp_path / "a.tar.gz", [_file("link/x")])
    with pytest.raises(ArchiveError, match="outside"):
        extract_tar(archive, dest)
    assert list(outside.iterdir()) == []


def test_extract_tar_refuses_what_is_not_an_archive(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar file at all")
    with pytest.raises(ArchiveError, match="cannot read"):
        extract_tar(tmp_path / "junk.tar.gz", tmp_path / "dest")
    truncated = _archive(tmp_path / "t.tar.gz", [_file("big", os.urandom(100_000))]).read_bytes()[:50_000]
    (tmp_path / "t.tar.gz").write_bytes(truncated)
    with pytest.raises(ArchiveError, match="cannot read"):
        extract_tar(tmp_path / "t.tar.gz", tmp_path / "dest2")


# -- registry references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, ref",
    [
        ("income", "datasets", RegistryRef("income", None, None)),
        ("income:3", "datasets", RegistryRef("income", 3, None)),
        ("income:03", "datasets", RegistryRef("income", 3, None)),
        ("income.v2:latest", "datasets", RegistryRef("income.v2", "latest", None)),
        ("_x-1.2", "datasets", RegistryRef("_x-1.2", None, None)),
        ("a" * 200, "datasets", RegistryRef("a" * 200, None, None)),
        ("datasets:/income/1", "datasets", RegistryRef("income", 1, None)),
        ("datasets:/income", "datasets", RegistryRef("income", None, None)),
        ("models:/clf/2", "models", RegistryRef("clf", 2, None)),
        ("models:/clf@production", "models", RegistryRef("clf", None, "production")),
        ("models:/clf", "models", RegistryRef("clf", None, None)),
        ("clf:2", "models", RegistryRef("clf", 2, None)),
    ],
)
def test_parse_registry_ref_accepts(text, kind, ref):
    assert parse_registry_ref(text, kind) == ref


@pytest.mark.parametrize(
    "text, kind",
    [
        ("", "datasets"), (None, "datasets"), ("income:", "datasets"), (":1", "datasets"),
        ("income:0", "datasets"), ("income:v2", "datasets"), ("income:+1", "datasets"),
        ("income:\u0661", "datasets"),  # an Arabic-Indic digit one: versions are ASCII digits
        ("income:1:2", "datasets"), (" income", "datasets"), ("income ", "datasets"), ("income\n", "datasets"),
        ("in come", "datasets"), ("-income", "datasets"), (".income", "datasets"), ("..", "datasets"),
        ("a" * 201, "datasets"), ("a/b", "datasets"),
        ("models:/clf/1", "datasets"),  # another registry's reference
        ("datasets:/income/", "datasets"), ("datasets:/income/latest", "datasets"),
        ("models:/clf/", "models"), ("models:/clf/x", "models"), ("models:/clf/0", "models"),
        ("models:/clf@", "models"), ("models:/clf@pr.od", "models"), ("models:/clf@prod/1", "models"),
        ("models:/clf/1@prod", "models"), ("models:/clf/1/2", "models"), ("models:/", "models"),
        (" models:/clf/1", "models"), ("models:/clf/1 ", "models"),
    ],
)
def test_parse_registry_ref_refuses(text, kind):
    with pytest.raises(RefSyntaxError, match="invalid reference"):
        parse_registry_ref(text, kind)


def test_the_two_forms_alone():
    assert parse_name_version("income:latest") == ("income", "latest", None)
    with pytest.raises(RefSyntaxError, match="expected NAME, NAME:VERSION or NAME:latest"):
        parse_name_version("datasets:/income/1")
    assert parse_registry_uri("models:/clf@staging", "models").alias == "staging"
    with pytest.raises(RefSyntaxError, match="expected datasets:/NAME"):
        parse_registry_uri("models:/clf/1", "datasets")
    with pytest.raises(RefSyntaxError, match="versions start at 1"):
        parse_registry_uri("models:/clf/000", "models")
