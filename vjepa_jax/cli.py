"""Command-line plumbing shared by the programs: absl flags, config files, one-line errors.

Every program (train, eval, convert, bench, online_eval) runs through `run_program`: a bad config
file, override or flag, and any error that means bad input (BAD_INPUT), end in one
`PROGRAM: error: ...` line and exit status 1 instead of a traceback. A run stopped by SIGTERM
with its checkpoint saved exits with EXIT_PREEMPTED (75), so a scheduler can requeue it
(docs/RELIABILITY.md lists the exits).
"""
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

# Errors that mean bad input or a bad environment (a missing file, an unreadable checkpoint,
# diverged training, a missing optional package), reported in one line.
BAD_INPUT = (ValueError, OSError, FloatingPointError, ImportError)

# "Pre-empted, checkpoint saved, run me again": sysexits.h EX_TEMPFAIL, which no other path of
# the programs returns (errors exit 1, a crash with a traceback 1, a signal kill 128 + N).
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """A program stopped early on request (SIGTERM) after saving: exit EXIT_PREEMPTED."""


class UsageError(Exception):
    """The command line itself is wrong (a missing flag or command): one line, exit status 1."""


def run_program(main, program, argv=None):
    """absl app.run(main), with config-file, override and BAD_INPUT errors reported in one line.

    The flags are parsed here, so a bad config file, override or flag ends in one
    `PROGRAM: error: ...` line instead of a traceback. The library's loggers (`vjepa_jax.*`) log
    at INFO, everything else (Orbax logs every file it writes) at WARNING.
    """
    argv = sys.argv if argv is None else argv
    help_flags = {"-h", "--help", "--helpshort", "-?"}
    if help_flags.intersection(argv[1:]) or "--helpfull" in argv[1:]:
        # absl's own help flags exit with status 1; asking for help is not an error.
        app.usage(shorthelp="--helpfull" not in argv[1:], writeto_stdout=True, exitcode=0)
    exit_if_config_file_missing(argv, program)
    app.define_help_flags()  # --helpxml and the like, before the flags are parsed here
    try:
        remaining = flags.FLAGS(argv)  # parse here so a bad override is not a traceback from absl
    except AttributeError as e:  # ml_collections: an override names a key the config lacks
        detail = str(e).strip("'\"").replace("\\'", "'").replace("\\n", " ")
        sys.exit(f"{program}: error: unknown config key in an override: {detail}")
    except KeyError as e:  # ml_collections: an override goes through a section the config lacks
        sys.exit(f"{program}: error: unknown config section in an override: {e.args[0]}")
    except (flags.Error, TypeError, ValueError) as e:
        sys.exit(f"{program}: error: {e}")

    def guarded(args):
        absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
        # A failed background save makes Orbax log a traceback per thread (4 or more);
        # checkpoint.check_saves reports it in one line at the next step instead (TensorStore's
        # "Event loop is closed" reports of the same failure: checkpoint.manager's hook).
        logging.getLogger("absl").addFilter(
            lambda r: not (r.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in r.pathname))
        logging.getLogger("vjepa_jax").setLevel(logging.INFO)
        try:
            main(args)
        except UsageError as e:
            sys.exit(f"{program}: error: {e}")
        except Preempted as e:
            print(f"{program}: pre-empted: {e}", file=sys.stderr)
            sys.exit(EXIT_PREEMPTED)
        except BAD_INPUT as e:  # printed once, here (not also logged)
            sys.exit(f"{program}: error: {e}")

    app.run(guarded, argv=argv, flags_parser=lambda _: remaining)


def run_workdir_program(run, program):
    """The command line of train and eval: `run(FLAGS.config, FLAGS.workdir)` via run_program.

    Requires --config and --workdir and starts jax.distributed when launched as one of several
    processes.
    """
    from vjepa_jax import distributed  # here: config files import this module without jax

    def main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        if flags.FLAGS.config is None or flags.FLAGS.workdir is None:
            raise app.UsageError("--config and --workdir are required")
        distributed.initialize_from_flags()
        run(flags.FLAGS.config, flags.FLAGS.workdir)

    run_program(main, program)


def exit_if_config_file_missing(argv, program):
    """Exit with one line naming the file (and line) when --config names no file or a file that
    fails to load (ml_collections would print a traceback, or report a file without get_config
    as an unknown override key). The file is loaded once more by the flag parser."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        path = value.split(":", 1)[0]
        if not os.path.isfile(path):
            sys.exit(f"{program}: error: config file {path} not found (from --config {value})")
        from vjepa_jax import config as config_lib  # here: it imports the methods

        try:
            config_lib.load_config_file(value)
        except config_lib.ConfigFileError as e:
            sys.exit(f"{program}: error: {e}")
