"""What the command modules share: quiet start-up, flag groups, and user errors without
tracebacks. Only command modules (train, evaluate, export, predict, tools/) import this.

Import it before anything imports TensorFlow: it silences TensorFlow's C++ start-up lines unless
``--verbosity`` (``-v``) is 1 or more or TF_CPP_MIN_LOG_LEVEL is set.
"""
import atexit
import logging as std_logging
import os
import re
import sys
import threading

from absl import app, flags, logging

from deeplab_load import config_fields
from deeplab_load.errors import FlagError, UserError

FLAGS = flags.FLAGS
USER_ERROR_EXIT = 1
FLAG_ERROR_EXIT = 2


def verbosity_requested(argv):
    """The --verbosity / -v value in ``argv`` (0 when absent or not a number)."""
    for index, arg in enumerate(argv):
        for name in ("--verbosity", "--v", "-v"):
            if arg == name and index + 1 < len(argv):
                value = argv[index + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


# TensorFlow's C++ log lines (absl format "I0000 00:00:17.. 123 file.cc:45] ..."), the line absl
# prints before its logging is initialised, cpu_feature_guard's second line, CUDA probing, and
# the "[[{{node Assert/Assert}}]]" continuation of a stopped input pipeline's warning.
_NOISE = re.compile(r"^([IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+\.(cc|h|cpp):\d+\]"
                    r"|\s+\[\[\{\{node "
                    r"|E\d{4} .*(cuInit|cuda)"
                    r"|WARNING: All log messages before absl::InitializeLog"
                    r"|To enable the following instructions: )")


class StderrFilter:
    """Replaces file descriptor 2 with a pipe whose lines are copied to the real stderr unless
    they are TensorFlow's C++ noise (TF 2.21 ignores TF_CPP_MIN_LOG_LEVEL for them).

    The copier thread gets its own duplicate of the real stderr in `start()`, so `stop()` (also
    run at exit) can restore fd 2 at any moment: the copier still drains the pipe up to its end
    and `stop()` waits for that before returning.
    """

    JOIN_TIMEOUT_S = 30   # only reached while another process still holds the pipe's write end

    def __init__(self):
        self.real_fd = None
        self.thread = None

    def start(self):
        sys.stderr.flush()
        self.real_fd = os.dup(2)
        copy_fd = os.dup(self.real_fd)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.thread = threading.Thread(target=self._copy, args=(read_fd, copy_fd), daemon=True,
                                       name="stderr-filter")
        self.thread.start()
        atexit.register(self.stop)

    @staticmethod
    def _copy(read_fd, out_fd):
        """Copies the pipe's lines but the noise to `out_fd` until EOF; closes both fds."""
        with os.fdopen(read_fd, "rb") as pipe, os.fdopen(out_fd, "wb", 0) as out:
            for line in pipe:
                if not _NOISE.match(line.decode("utf-8", "replace")):
                    try:
                        out.write(line)
                    except OSError:     # the terminal is gone: keep draining the pipe
                        pass

    def stop(self):
        """Restores fd 2 and waits until every line written so far is copied."""
        if self.real_fd is None:
            return
        sys.stderr.flush()
        os.dup2(self.real_fd, 2)  # closes the pipe's last write end: the copier sees EOF
        os.close(self.real_fd)
        self.real_fd = None
        self.thread.join(timeout=self.JOIN_TIMEOUT_S)


STDERR_FILTER = StderrFilter()


def quiet_startup(argv=None):
    """Filters TensorFlow's C++ start-up lines unless verbosity >= 1 is asked for."""
    if verbosity_requested(sys.argv if argv is None else argv) < 1 and \
            STDERR_FILTER.real_fd is None:
        STDERR_FILTER.start()


quiet_startup()


class _TensorFlowInfoFilter(std_logging.Filter):
    """Drops INFO lines logged from TensorFlow's own Python modules (e.g. "Sharding callback
    duration" at every checkpoint write)."""

    def filter(self, record):
        from_tensorflow = f"{os.sep}tensorflow{os.sep}" in (record.pathname or "")
        return not (from_tensorflow and record.levelno <= std_logging.INFO)


def _quiet_logging():
    if FLAGS.verbosity < 1:
        logging.get_absl_handler().addFilter(_TensorFlowInfoFilter())
        logging.set_verbosity(logging.INFO)


def report_user_error(error):
    """Prints a user error in at most two lines (the rest goes to the log at verbosity 1)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    shown = lines[:2]
    if len(lines) > 2:
        shown[-1] += f" (and {len(lines) - 2} more lines with --verbosity=1)"
        logging.vlog(1, "%s", "\n".join(lines))
    print("error: " + "\n".join(shown), file=sys.stderr)


def run(main):
    """absl's app.run(main) where UserErrors end the process with their message and a non-zero
    exit, and KeyboardInterrupt with one line; other exceptions keep their traceback."""

    def guarded(argv):
        _quiet_logging()
        try:
            if len(argv) > 1:
                raise FlagError(f"unexpected arguments {argv[1:]}: every setting is a --flag "
                                f"(see --help)")
            return main(argv)
        except UserError as error:
            report_user_error(error)
            code = FLAG_ERROR_EXIT if isinstance(error, FlagError) else USER_ERROR_EXIT
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        # Input pipelines may still hold threads whose destructors can block: leave at once.
        sys.stdout.flush()
        STDERR_FILTER.stop()
        os._exit(code)

    app.run(guarded)


# ----------------------------------------------------------------------------------------------
# Flags generated from a command's config class (`deeplab_load.config_fields`): one flag per leaf
# field, with its name, default, help and kind; the command module calls
# `flags.adopt_module_key_flags(cli)` afterwards so that its --help lists them.


def define_flags(cls):
    """One flag per leaf field of config class ``cls`` (its flag name, default and help; an
    enum for ``choices``; tuple fields are list flags, 'none' for the empty tuple)."""
    for leaf in config_fields.leaves(cls):
        _define_leaf_flag(leaf)


def _define_leaf_flag(leaf):
    default, help_text = leaf.default, leaf.help
    kind = str(leaf.field.type)
    if leaf.choices:
        flags.DEFINE_enum(leaf.flag, default, list(leaf.choices), help_text)
    elif kind == "bool" or kind == "<class 'bool'>" or isinstance(default, bool):
        flags.DEFINE_bool(leaf.flag, default, help_text)
    elif leaf.is_list:
        flags.DEFINE_list(leaf.flag, None if default is None else
                          [str(v) for v in default] or ["none"], help_text)
    elif "int" in kind:
        flags.DEFINE_integer(leaf.flag, default, help_text,
                             lower_bound=leaf.field.metadata.get("lower_bound"))
    elif "float" in kind:
        flags.DEFINE_float(leaf.flag, default, help_text)
    else:
        flags.DEFINE_string(leaf.flag, default, help_text)


def config_from_flags(cls):
    """(instance of config class ``cls`` from the flags of `define_flags`, the flag names given
    explicitly). List flags go through their field's parser (FlagError for bad values)."""
    values, given = {}, set()
    for leaf in config_fields.leaves(cls):
        flag = FLAGS[leaf.flag]
        values[leaf.flag] = leaf.parse_list(flag.value) if leaf.is_list else flag.value
        if flag.present:
            given.add(leaf.flag)
    return config_fields.from_flags(cls, **values), given
