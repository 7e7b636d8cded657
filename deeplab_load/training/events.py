"""events.jsonl: the LoAd event log, one JSON object per line, appended as events happen.

An append killed mid-write leaves a torn last line (no newline, or not JSON). Opening the log
cuts such a tail off (the controller re-sends every event after the state's `emitted_through`,
so the event comes back on resume). A bad line before the last one is damage the run did not
cause: `DamagedFileError` naming the file and line.
"""
import json
import os

from absl import logging

from deeplab_load.errors import DamagedFileError


class EventLog:
    """Append-only JSON-lines log at `path`; `last_seq` is the highest "seq" it holds."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.last_seq = self._recover()

    def _recover(self):
        """Reads the log, cutting off a torn last line; returns the last seq (0 if none)."""
        if not os.path.exists(self.path):
            return 0
        with open(self.path, "rb") as f:
            data = f.read()
        *complete, tail = data.split(b"\n")   # a whole line is written with its newline
        last = 0
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                last = max(last, int(json.loads(line)["seq"]))
            except (ValueError, KeyError, TypeError) as err:
                raise DamagedFileError(
                    f"{self.path}: line {number} is not an event ({err}); the log is damaged: "
                    f"restore it from a backup, or delete it (it is only a log: state.json "
                    f"holds the run, every event included)") from err
        if tail:
            self._truncate(len(data) - len(tail), len(complete) + 1)
        return last

    def _truncate(self, size, line_number):
        logging.warning("%s: line %d is incomplete (the run was stopped while writing it): cut "
                        "off; the event is written again on resume", self.path, line_number)
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def append(self, event):
        """Appends `event` (a JSON object with "seq", finite numbers only) as one line."""
        line = json.dumps(event, sort_keys=True, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        self.last_seq = max(self.last_seq, event["seq"])

