import gzip
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from rpj_tasks.core import storage


def test_atomic_write_visible_only_after_success(tmp_path):
    url = (tmp_path / "a" / "b.bin").as_uri()
    with storage.atomic_write(url) as f:
        f.write(b"hello")
        assert not storage.exists(url)
    assert storage.read_bytes(url) == b"hello"
    assert sorted(os.listdir(tmp_path / "a")) == ["b.bin"]


def test_atomic_write_failure_leaves_nothing(tmp_path):
    url = (tmp_path / "c.bin").as_uri()
    storage.write_bytes(url, b"old")
    with pytest.raises(RuntimeError):
        with storage.atomic_write(url) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert storage.read_bytes(url) == b"old"
    assert os.listdir(tmp_path) == ["c.bin"]


def test_plain_paths_are_file_urls(tmp_path):
    path = str(tmp_path / "d.txt")
    with storage.atomic_write(path, "w") as f:
        f.write("héllo\n")
    assert storage.read_bytes(path) == "héllo\n".encode()
    assert storage.local_copy(path) == path


def test_deterministic_gzip(tmp_path):
    outs = []
    for name in ("x.gz", "y.gz"):
        url = (tmp_path / name).as_uri()
        with storage.atomic_gzip_write(url) as gz:
            gz.write(b"same bytes\n" * 100)
        outs.append(storage.read_bytes(url))
        time.sleep(1.1)
    assert outs[0] == outs[1]
    assert gzip.decompress(outs[0]) == b"same bytes\n" * 100


def test_killed_writer_leaves_no_visible_file(tmp_path):
    target = tmp_path / "out" / "big.json.gz"
    code = textwrap.dedent(f"""
        import sys, time
        from rpj_tasks.core import storage
        with storage.atomic_gzip_write({target.as_uri()!r}) as gz:
            gz.write(b"x" * 1_000_000)
            gz.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    # only the hidden temp file may remain; it is never a visible output name
    assert all(name.startswith(".big.json.gz.tmp-") for name in os.listdir(target.parent))
    storage.write_bytes(target.as_uri(), b"done")
    assert target.read_bytes() == b"done"


def test_listdir_join_remove(tmp_path):
    base = tmp_path.as_uri()
    storage.write_bytes(storage.join(base, "d", "1.txt"), b"1")
    storage.write_bytes(storage.join(base, "d/", "/2.txt"), b"2")
    assert storage.listdir(storage.join(base, "d")) == ["1.txt", "2.txt"]
    assert storage.listdir(storage.join(base, "missing")) == []
    storage.remove(storage.join(base, "d", "1.txt"))
    storage.remove(storage.join(base, "d", "nope.txt"))
    assert storage.listdir(storage.join(base, "d")) == ["2.txt"]


def test_registered_options_is_a_copy():
    storage.register_options("memory", {"skip_instance_cache": True})
    try:
        options = storage.registered_options()
        assert options["memory"] == {"skip_instance_cache": True}
        options["memory"]["skip_instance_cache"] = False
        options["s3x"] = {}
        assert storage.registered_options()["memory"] == {"skip_instance_cache": True}
        assert "s3x" not in storage.registered_options()
    finally:
        with storage._LOCK:
            storage._OPTIONS.pop("memory", None)


def test_join_below_keeps_every_path_under_its_base():
    from rpj_tasks.core.errors import PermanentError, UnsafePathError

    assert storage.join_below("s3://b/root/", "a/b.gz") == "s3://b/root/a/b.gz"
    for bad in ("", "../x", "a/../../x", "/abs", "a//b", "./a", "a/.", "s3://other/x", "a\\b", "a\nb", "a\x00b"):
        with pytest.raises(UnsafePathError, match="unsafe segment path") as err:
            storage.join_below("file:///root", bad, "segment path")
        assert isinstance(err.value, PermanentError)


def test_redact_hides_credentials_in_urls():
    assert storage.redact("GET https://u:p%40ss@host:8/x?a=1") == "GET https://***@host:8/x?a=1"
    assert storage.redact("http://rpjuser:Sek@r1tPW@127.0.0.1:80/x") == "http://***@127.0.0.1:80/x"  # an unencoded @
    assert storage.redact("'https://user:pa'ss@host/'") == "'https://***@host/'"
    assert storage.redact("s3://bucket/k?X-Amz-Signature=abc&X-Amz-Credential=AK/x&n=2") == (
        "s3://bucket/k?X-Amz-Signature=***&X-Amz-Credential=***&n=2"
    )
    assert storage.redact("'https://tok@h/p' and http://h/p?token=t1#f") == "'https://***@h/p' and http://h/p?token=***#f"
    for plain in ("https://h/p?email=a@b", "s3://bucket/key@2x.png", "no url at all", "file:///tmp/a"):
        assert storage.redact(plain) == plain


def test_join_below_refuses_a_symlink_that_leads_out(tmp_path):
    from rpj_tasks.core.errors import UnsafePathError

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "link").symlink_to(outside)
    (root / "a" / "inside").symlink_to(root / "a")
    assert storage.join_below(root.as_uri(), "a/inside/x.gz") == f"{root.as_uri()}/a/inside/x.gz"
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.join_below(root.as_uri(), "a/link/x.gz", "segment path")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        storage.join_below(str(root), "a/link/x.gz", "segment path")


def _memory_object(name: str, data: bytes) -> str:
    """An object on fsspec's in-memory filesystem (a real non-local filesystem, like s3://)."""
    import fsspec

    url = f"memory://rpj-test-{uuid.uuid4().hex}/{name}"
    with fsspec.open(url, "wb") as f:
        f.write(data)
    return url


def test_local_copy_of_a_remote_object_is_checked_against_its_sha256(tmp_path, monkeypatch):
    """A remote object replaced by another of the same size: without a digest the old copy keeps
    being served (the documented limit); with the manifest's digest the copy is downloaded again."""
    import fsspec

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    old, new = b"A" * 4096, b"B" * 4096
    url = _memory_object("model.bin", old)
    first = storage.local_copy(url)
    assert open(first, "rb").read() == old
    with fsspec.open(url, "wb") as f:  # replaced in place, same size
        f.write(new)
    assert open(storage.local_copy(url), "rb").read() == old  # keyed by URL and size only
    copy = storage.local_copy(url, sha256=hashlib.sha256(new).hexdigest())
    assert copy == first and open(copy, "rb").read() == new  # downloaded again
    assert storage.local_copy(url, sha256=hashlib.sha256(new).hexdigest()) == copy  # and kept
    with pytest.raises(storage.ChecksumError, match="differs from the expected"):
        storage.local_copy(url, sha256=hashlib.sha256(old).hexdigest())  # the object itself differs
    assert not os.path.exists(copy)  # no copy left that a digest-less call would trust


def test_local_copy_of_a_local_file_is_checked_against_its_sha256(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"model")
    assert storage.local_copy(str(path), sha256=hashlib.sha256(b"model").hexdigest()) == str(path)
    with pytest.raises(storage.ChecksumError):
        storage.local_copy(str(path), sha256=hashlib.sha256(b"other").hexdigest())


def test_cache_files_are_checked_synced_and_stale_temps_swept(tmp_path, monkeypatch):
    """write_cache: data then its SHA-256, fsync'ed before the rename; read_cache refuses a changed
    byte; the folder's temporary cache files older than an hour are removed, a fresh one and other
    files are left alone."""
    folder = tmp_path / "cache" / "kind"
    folder.mkdir(parents=True)
    stale, fresh = folder / f"x.bin.tmp-{uuid.uuid4().hex}", folder / f"x.bin.tmp-{uuid.uuid4().hex}"
    not_ours = folder / "notes.tmp-kept"  # an old file that is not a cache write's temporary file
    for path, data in ((stale, b"killed writer"), (fresh, b"live writer"), (not_ours, b"other")):
        path.write_bytes(data)
    hour_ago = time.time() - storage.CACHE_TMP_MAX_AGE - 60
    os.utime(stale, (hour_ago, hour_ago))
    os.utime(not_ours, (hour_ago, hour_ago))
    synced: list[int] = []
    real_fsync, real_replace = os.fsync, os.replace
    events: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), events.append("fsync"), real_fsync(fd))[-1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[-1])

    path = str(folder / "x.bin")
    assert storage.write_cache(path, b"payload")
    assert events == ["fsync", "replace"]
    assert not stale.exists() and fresh.exists() and not_ours.exists()
    assert storage.read_cache(path) == b"payload" and storage.read_cache(path, 7) == b"payload"
    assert storage.read_cache(path, 8) is None
    data = bytearray(open(path, "rb").read())
    data[0] ^= 1
    open(path, "wb").write(bytes(data))
    assert storage.read_cache(path) is None
    assert storage.read_cache(str(folder / "missing")) is None


def test_the_test_session_has_its_own_cache_dir():
    """tests/conftest.py: the suite neither reads nor fills ~/.cache/rpj or the developer's cache."""
    import tempfile
    from pathlib import Path

    cache = Path(storage.cache_dir())
    assert cache.is_dir() and cache.name.startswith("rpj-test-cache-")
    assert cache.parent == Path(tempfile.gettempdir())
    assert not cache.is_relative_to(Path.home())
