"""The webdataset tar of an images shard: members, grouping by key, metadata, failures left out (no Spark)."""

import json
import tarfile

import pyarrow as pa
import pytest

from laion5b_spark.download.webdataset import read_tar_samples, write_tar
from laion5b_spark.schemas import IMAGES, check


def images(keys=("s00000", "s00001", "s00002", "s00003")) -> pa.Table:
    """Rows 0 and 2 succeed; row 1 failed; row 3 says success but has no bytes (must not reach the tar)."""
    n = len(keys)
    ok = [True, False, True, False]
    cols = {
        "uid": [10 + i for i in range(n)], "url": [f"http://h/{i}.jpg" for i in range(n)],
        "text": ["a cat", "a dog", "ein Hund \u00fc", "none"], "language": ["en", "en", "de", "en"],
        "key": list(keys), "status": ["success", "failed", "success", "success"],
        "reason": [None, "http_error", None, None], "error_message": [None, "HTTP 404", None, None],
        "http_status": [200, 404, 200, 200], "width": [64 if o else None for o in ok],
        "height": [48 if o else None for o in ok], "original_width": [640 if o else None for o in ok],
        "original_height": [480 if o else None for o in ok], "sha256": ["ab" * 32 if o else None for o in ok],
        "mime": ["image/jpeg" if o else None for o in ok],
        "jpg": [b"\xff\xd8img0", None, b"\xff\xd8img2", None], "exif": [None, None, '{"Make": "X"}', None],
    }
    table = pa.table(cols, schema=IMAGES)
    check("images", table)
    return table


def test_members_grouped_by_key_in_row_order(tmp_path):
    path = tmp_path / "00000.tar"
    assert write_tar(images(), str(path)) == 2
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["s00000.jpg", "s00000.txt", "s00000.json",
                                         "s00002.jpg", "s00002.txt", "s00002.json"]
    assert all(m.isfile() and m.mode == 0o444 and m.mtime == 0 for m in members)
    assert [m.name.split(".", 1)[0] for m in members] == ["s00000"] * 3 + ["s00002"] * 3


def test_contents_and_img2dataset_metadata(tmp_path):
    path = tmp_path / "00000.tar"
    write_tar(images(), str(path))
    with tarfile.open(path) as tar:
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert read["s00002.jpg"] == b"\xff\xd8img2"
    assert read["s00002.txt"].decode("utf-8") == "ein Hund \u00fc"
    meta = json.loads(read["s00002.json"])
    assert meta == {"url": "http://h/2.jpg", "caption": "ein Hund \u00fc", "key": "s00002", "status": "success",
                    "error_message": None, "width": 64, "height": 48, "original_width": 640,
                    "original_height": 480, "sha256": "ab" * 32, "exif": '{"Make": "X"}', "uid": 12,
                    "language": "de"}
    assert json.loads(read["s00000.json"])["exif"] is None
    assert not any(name.startswith(("s00001", "s00003")) for name in read)  # failed and byte-less rows


def test_read_tar_samples_round_trip_and_encode_format(tmp_path):
    path = tmp_path / "x.tar"
    write_tar(images(), str(path), encode_format="webp")
    samples = read_tar_samples(str(path))
    assert [s["key"] for s in samples] == ["s00000", "s00002"]
    assert samples[0]["image"] == b"\xff\xd8img0" and samples[0]["text"] == "a cat"
    assert samples[1]["json"]["uid"] == 12
    with tarfile.open(path) as tar:
        assert tar.getnames()[0] == "s00000.webp"


def test_same_shard_same_bytes(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    write_tar(images(), str(a))
    write_tar(images(), str(b))
    assert a.read_bytes() == b.read_bytes()


def test_empty_and_all_failed_shards_give_an_empty_tar(tmp_path):
    path = tmp_path / "e.tar"
    assert write_tar(images().filter(pa.array([False, True, False, True])), str(path)) == 0
    with tarfile.open(path) as tar:
        assert tar.getnames() == []


def test_key_with_a_dot_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot name"):
        write_tar(images(keys=("s0.0", "s1", "s2", "s3")), str(tmp_path / "bad.tar"))


def test_webdataset_package_reads_it(tmp_path):
    wds = pytest.importorskip("webdataset")
    path = tmp_path / "00000.tar"
    write_tar(images(), str(path))
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["s00000", "s00002"]
    assert samples[1]["jpg"] == b"\xff\xd8img2" and json.loads(samples[1]["json"])["caption"] == "ein Hund \u00fc"
