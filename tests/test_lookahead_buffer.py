"""Map-aggregation buffer (Algorithm 1): start, flush, append, delete-oldest-ending, crashes."""
import json
import os

import pytest

from deeplab_load.lookahead.buffer import MapBuffer


class WriterCrash(Exception):
    pass


def writer(content, files=3, crash_after=None):
    """Writes `files` small maps holding `content`; raises after `crash_after` files."""
    def write(set_dir):
        for k in range(files):
            if k == crash_after:
                raise WriterCrash(set_dir)
            with open(os.path.join(set_dir, f"{k:05d}.png"), "w") as f:
                f.write(f"{content}:{k}")
    return write


def contents(buffer):
    """[(set name, sorted file contents)] in buffer order, read from disk."""
    out = []
    for map_set, set_dir in zip(buffer.sets(), buffer.set_dirs()):
        files = sorted(os.listdir(set_dir))
        out.append((map_set.name, [open(os.path.join(set_dir, f)).read() for f in files]))
    return out


def folders(root):
    return sorted(name for name in os.listdir(root) if name != "index.json")


def test_start_then_append_until_full_deletes_oldest_ending(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0")
    buffer.append(writer("e00"), "g0_0")
    buffer.append(writer("e01"), "g0_1")
    assert [m.name for m in buffer.sets()] == [
        "set_0000_peak_g0", "set_0001_end_g0_0", "set_0002_end_g0_1"]
    sets = buffer.append(writer("e02"), "g0_2")  # full: B[1] (g0_0) goes, B[0] stays
    assert [(m.role, m.label) for m in sets] == [("peak", "g0"), ("end", "g0_1"), ("end", "g0_2")]
    assert contents(buffer)[0] == ("set_0000_peak_g0", ["g0:0", "g0:1", "g0:2"])
    assert contents(buffer)[2] == ("set_0003_end_g0_2", ["e02:0", "e02:1", "e02:2"])
    assert folders(tmp_path) == ["set_0000_peak_g0", "set_0002_end_g0_1", "set_0003_end_g0_2"]


def test_flush_replaces_everything_with_peak_and_end(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0")
    buffer.append(writer("e00"), "g0_0")
    sets = buffer.flush(writer("g1"), writer("e01"), "g1", "g0_1")
    assert [m.name for m in sets] == ["set_0002_peak_g1", "set_0003_end_g0_1"]
    assert folders(tmp_path) == ["set_0002_peak_g1", "set_0003_end_g0_1"]
    assert [c for _, c in contents(buffer)] == [["g1:0", "g1:1", "g1:2"],
                                                ["e01:0", "e01:1", "e01:2"]]


def test_index_survives_reopen(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=2)
    buffer.start(writer("g0"), "g0")
    buffer.append(writer("e00"), "g0_0")
    buffer.append(writer("e01"), "g0_1")  # max 2: [g0, e01]
    reopened = MapBuffer(tmp_path, max_sets=2)
    assert contents(reopened) == contents(buffer)
    assert [m.label for m in reopened.sets()] == ["g0", "g0_1"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["next_serial"] == 3


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_writer_crash_mid_set_leaves_previous_sets_and_no_half_set(tmp_path, crash_after):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0")
    buffer.append(writer("e00"), "g0_0")
    before = contents(buffer)
    with pytest.raises(WriterCrash):
        buffer.append(writer("e01", crash_after=crash_after), "g0_1")
    assert contents(buffer) == before
    assert folders(tmp_path) == ["set_0000_peak_g0", "set_0001_end_g0_0"]
    # The failed serial is reused: numbering stays a function of the successful operations.
    buffer.append(writer("e01"), "g0_1")
    assert buffer.sets()[-1].name == "set_0002_end_g0_1"


def test_crash_in_second_set_of_flush_drops_the_first_one_too(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0")
    before = contents(buffer)
    with pytest.raises(WriterCrash):
        buffer.flush(writer("g1"), writer("e01", crash_after=2), "g1", "g0_1")
    assert contents(buffer) == before
    assert folders(tmp_path) == ["set_0000_peak_g0"]


def test_killed_process_leftovers_are_removed_on_open(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0")
    before = contents(buffer)
    # A kill mid-write leaves a temp folder; a kill between rename and index update a whole set
    # folder the index does not list. Neither may be read as a set.
    half = tmp_path / ".tmp_set_0001_end_g0_0"
    half.mkdir()
    (half / "00000.png").write_text("partial")
    orphan = tmp_path / "set_0001_end_g0_0"
    orphan.mkdir()
    (orphan / "00000.png").write_text("unlisted")
    (tmp_path / "index.json.tmp").write_text('{"half": ')
    reopened = MapBuffer(tmp_path, max_sets=3)
    assert contents(reopened) == before
    assert folders(tmp_path) == ["set_0000_peak_g0"]
    reopened.append(writer("e00"), "g0_0")
    assert contents(reopened)[1] == ("set_0001_end_g0_0", ["e00:0", "e00:1", "e00:2"])


def test_repeated_op_id_is_a_no_op(tmp_path):
    buffer = MapBuffer(tmp_path, max_sets=3)
    buffer.start(writer("g0"), "g0", op_id="init")
    first = buffer.append(writer("e00"), "g0_0", op_id="cycle_0")
    again = buffer.append(writer("other"), "g0_0", op_id="cycle_0")
    assert again == first
    assert contents(buffer)[1][1] == ["e00:0", "e00:1", "e00:2"]
    assert buffer.append(writer("e01"), "g0_1", op_id="cycle_1")[-1].label == "g0_1"


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="max_sets"):
        MapBuffer(tmp_path / "a", max_sets=1)
    buffer = MapBuffer(tmp_path / "b", max_sets=3)
    with pytest.raises(ValueError, match="empty buffer"):
        buffer.append(writer("e00"), "g0_0")
    with pytest.raises(ValueError, match="wrote no files"):
        buffer.start(writer("g0", files=0), "g0")
    with pytest.raises(ValueError, match="label"):
        buffer.start(writer("g0"), "g 0/x")
    buffer.start(writer("g0"), "g0")
    with pytest.raises(ValueError, match=r"index.json.*max_sets=3"):
        MapBuffer(tmp_path / "b", max_sets=4)
    (tmp_path / "b" / "index.json").write_text("{broken")
    with pytest.raises(ValueError, match="index.json"):
        MapBuffer(tmp_path / "b", max_sets=3)
