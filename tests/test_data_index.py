"""Index files: official CSV and .npy parsing, weights, clear errors naming file:line."""
import numpy as np
import pytest

from vjepa_jax.data.index import read_index, sample_weights


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_csv_last_space_split_blank_lines_and_relative_paths(tmp_path):
    csv = _write(tmp_path / "a.csv",
                 "/data/my video.mp4 3\n\n/data/b.mp4 0\nclips/c.mp4 -1\n")
    idx = read_index([csv])
    assert idx.paths == ("/data/my video.mp4", "/data/b.mp4", str(tmp_path / "clips/c.mp4"))
    assert idx.labels.tolist() == [3, 0, -1]
    assert idx.file_ids.tolist() == [0, 0, 0]


def test_npy_paths_get_label_zero_and_files_concatenate(tmp_path):
    npy = tmp_path / "b.npy"
    np.save(npy, np.array(["/x/1.mp4", "/x/2.mp4"]))
    csv = _write(tmp_path / "a.csv", "/y/1.mp4 7\n")
    idx = read_index([csv, str(npy)])
    assert idx.paths == ("/y/1.mp4", "/x/1.mp4", "/x/2.mp4")
    assert idx.labels.tolist() == [7, 0, 0]
    assert idx.file_ids.tolist() == [0, 1, 1]
    assert idx.file_range(1) == (1, 3)


@pytest.mark.parametrize("line, message", [
    ("/only/a/path.mp4", "a.csv:2: expected '<path> <label>'"),
    ("/data/x.mp4 cat", "a.csv:2: label 'cat' is not an integer"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    csv = _write(tmp_path / "a.csv", f"/ok.mp4 1\n{line}\n/ok2.mp4 2\n")
    with pytest.raises(ValueError, match=message):
        read_index([csv])


def test_missing_or_empty_index_and_bad_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_index([str(tmp_path / "nope.csv")])
    empty = _write(tmp_path / "e.csv", "\n")
    with pytest.raises(ValueError, match="no entries"):
        read_index([empty])
    csv = _write(tmp_path / "a.csv", "/a.mp4 0\n")
    with pytest.raises(ValueError, match="2 weights for 1 index files"):
        read_index([csv], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        read_index([csv], weights=[0.0])


def test_sample_weights_are_w_over_n(tmp_path):
    a = _write(tmp_path / "a.csv", "".join(f"/a{i}.mp4 0\n" for i in range(2)))
    b = _write(tmp_path / "b.csv", "".join(f"/b{i}.mp4 0\n" for i in range(6)))
    p = sample_weights(read_index([a, b], weights=[3.0, 1.0]))
    # File a carries 3/4 of the mass over its 2 entries, file b 1/4 over 6.
    np.testing.assert_allclose(p, [3 / 8] * 2 + [1 / 24] * 6)
    np.testing.assert_allclose(sample_weights(read_index([a, b])), [1 / 8] * 8)
