"""What the command modules share: quiet start-up, flag groups, and user errors without
tracebacks. Only command modules (train, evaluate, export, predict, tools/) import this.

Import it before anything imports TensorFlow: it silences TensorFlow's C++ start-up lines unless
``--verbosity`` (``-v``) is 1 or more or TF_CPP_MIN_LOG_LEVEL is set.
"""
import atexit
import dataclasses
import logging as std_logging
import os
import re
import sys
import threading

from absl import app, flags, logging

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
# Flag groups shared by several commands. A command module calls
# `flags.adopt_module_key_flags(cli)` after defining them, so that its --help lists them.


MODEL_FLAG_NAMES = ("run_dir", "checkpoint", "checkpoint_tag", "zoo_name", "model_variant",
                    "num_classes", "output_stride", "atrous_rates", "decoder_output_stride")


def define_model_flags(what):
    """The model flags; ``what`` completes "--run_dir: training run whose model ..." (e.g.
    "is evaluated")."""
    flags.DEFINE_string("run_dir", None, f"Training run directory whose model {what}: its "
                        f"checkpoint (tag 'final' first) and model.json (architecture, data set, "
                        f"eval crop size), so no model flags are needed.")
    flags.DEFINE_string("checkpoint", None, "Instead of / inside --run_dir: a checkpoint of ours "
                        "(a run's checkpoint folder, a tf.train prefix, a .weights.h5 file) or an "
                        "official TF1 zoo checkpoint (prefix or folder).")
    flags.DEFINE_string("checkpoint_tag", None, "Snapshot of a checkpoint folder (final, g_best, "
                        "g_s, g_end, stage1; default: the first present).")
    flags.DEFINE_string("zoo_name", None, "Official zoo entry whose architecture applies when "
                        "there is no model.json (e.g. xception65_coco_voc_trainaug).")
    flags.DEFINE_enum("model_variant", None, ["xception_65", "mobilenet_v2"],
                      "Backbone; overrides model.json / --zoo_name.")
    flags.DEFINE_integer("num_classes", None, "Classes; overrides model.json, the data set's and "
                         "the zoo's.")
    flags.DEFINE_integer("output_stride", None, "Output stride 8/16/32; overrides model.json "
                         "(atrous rates rescaled).")
    flags.DEFINE_list("atrous_rates", None, "ASPP atrous rates; 'none' for no atrous branches; "
                      "overrides model.json.")
    flags.DEFINE_integer("decoder_output_stride", None, "4 for the decoder, 0 for none; "
                         "overrides model.json.")


def int_list_flag(name, allow_none=False):
    """A list flag of ints as a tuple; () for 'none' when ``allow_none``; None when unset."""
    value = FLAGS[name].value
    if value is None:
        return None
    if allow_none and [v.strip().lower() for v in value] in ([], ["none"], [""]):
        return ()
    try:
        return tuple(int(v) for v in value if v.strip())
    except ValueError as err:
        raise FlagError(f"--{name} must be integers{' or none' if allow_none else ''}, got "
                        f"{','.join(value)}") from err


def size_flag(name):
    """--name as (H, W): 'H,W' or 'S' (square); () for 'none'; None when unset. Values are
    range-checked by the command's config."""
    size = int_list_flag(name, allow_none=True)
    return size * 2 if size is not None and len(size) == 1 else size


def define_multi_scale_flags():
    """--eval_scales, --add_flipped_images and --dtype (evaluate, predict and export)."""
    flags.DEFINE_list("eval_scales", ["1.0"], "Multi-scale inference as research/deeplab: image "
                      "scales whose softmax probabilities are averaged, e.g. "
                      "0.5,0.75,1.0,1.25,1.5,1.75.")
    flags.DEFINE_bool("add_flipped_images", False, "Also average the left-right flipped image's "
                      "probabilities (research/deeplab's add_flipped_images).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the "
                      "model (weights stay float32; logits, resizes and softmax are float32). "
                      "bfloat16 is faster on CPUs with bf16 units and agrees with float32 on "
                      ">= 99.5% of the labels of a trained model.")


STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")   # training.strategy's


def define_strategy_flag():
    """--strategy (evaluate, predict): the tf.distribute strategy whose replicas share the
    images."""
    flags.DEFINE_enum("strategy", "auto", list(STRATEGY_KINDS), "tf.distribute strategy whose "
                      "replicas share the images (auto: MultiWorkerMirroredStrategy when "
                      "TF_CONFIG names several tasks, MirroredStrategy with several GPUs, else "
                      "one device); the numbers equal one device's.")


def strategy_from_flags():
    """(strategy, is the chief) of --strategy (`training.strategy.make_strategy`)."""
    from deeplab_load.training.strategy import is_chief, make_strategy
    strategy = make_strategy(FLAGS.strategy)
    return strategy, is_chief(strategy)


def multi_scale_from_flags():
    """(eval_scales tuple of floats, add_flipped_images); FlagError for bad scales."""
    from deeplab_load import multi_scale
    try:
        scales = multi_scale.parse_scales(flags.FLAGS.eval_scales)
    except ValueError as err:
        raise FlagError(str(err)) from err
    return scales, flags.FLAGS.add_flipped_images


def model_source_from_flags():
    from deeplab_load.checkpoints.model_loading import ModelSource
    return ModelSource(
        run_dir=FLAGS.run_dir, checkpoint=FLAGS.checkpoint, checkpoint_tag=FLAGS.checkpoint_tag,
        zoo_name=FLAGS.zoo_name, model_variant=FLAGS.model_variant,
        num_classes=FLAGS.num_classes, output_stride=FLAGS.output_stride,
        atrous_rates=int_list_flag("atrous_rates", allow_none=True),
        decoder_output_stride=FLAGS.decoder_output_stride)



def define_dataclass_flags(cls):
    """One flag per field of dataclass ``cls`` (same name, its default and ``help`` metadata;
    enum for ``choices``; tuple fields are list flags, 'none' for the empty tuple)."""
    for field in dataclasses.fields(cls):
        _define_field_flag(field)


def _define_field_flag(field):
    """Defines the flag of one dataclass field (see define_dataclass_flags)."""
    help_text, choices = field.metadata.get("help", ""), field.metadata.get("choices")
    kind = str(field.type)
    default = field.default
    if choices:
        flags.DEFINE_enum(field.name, default, list(choices), help_text)
    elif kind == "bool" or isinstance(default, bool):
        flags.DEFINE_bool(field.name, default, help_text)
    elif "tuple" in kind:
        flags.DEFINE_list(field.name, None if default is None else
                          [str(v) for v in default] or ["none"], help_text)
    elif "int" in kind:
        flags.DEFINE_integer(field.name, default, help_text)
    elif "float" in kind:
        flags.DEFINE_float(field.name, default, help_text)
    else:
        flags.DEFINE_string(field.name, default, help_text)


def dataclass_from_flags(cls):
    """(instance of ``cls`` from the flags of ``define_dataclass_flags``, names given
    explicitly). Tuple fields named ``*_size`` are sizes (one value: square)."""
    values = {}
    for field in dataclasses.fields(cls):
        if "tuple" in str(field.type):
            values[field.name] = (size_flag(field.name) if field.name.endswith("_size")
                                  else int_list_flag(field.name, allow_none=True))
        else:
            values[field.name] = FLAGS[field.name].value
    given = {field.name for field in dataclasses.fields(cls) if FLAGS[field.name].present}
    return cls(**values), given
