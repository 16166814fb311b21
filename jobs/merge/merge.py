"""spark-submit entry point of the serving layer; `weir merge` runs the same code.

    spark-submit jobs/merge/merge.py --conf conf/emr.yaml
    spark-submit jobs/merge/merge.py --conf conf/emr.yaml --follow        # beside the stream
    spark-submit jobs/merge/merge.py --conf conf/emr.yaml --every 120

Publishes the unified telemetry_minute table (BATCH up to the horizon, SPEED beyond) in one
Delta commit, or none when nothing changed; the run is recorded in _control/merge_runs.
``--follow`` merges every ``timing.merge_interval_seconds`` (``--every SECONDS`` overrides it)
until SIGTERM / SIGINT, finishing the current merge first (weir.layers.merge_loop).
Exit codes (DESIGN.md §8): 0 success, 1 a failed merge (recorded), 2 bad configuration or
arguments.
"""

import argparse
import logging
import sys
import threading

from weir.config import DEFAULT_CONF_PATH, ConfigError, load_config
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.layers.merge_loop import follow_merges
from weir.layers.serving import run_merge
from weir.signals import stop_on_signals
from weir.spark import build_session


def seconds(text: str) -> int:
    """An interval in whole seconds, 1 to 86400 (argparse reports a bad one, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{value} is not in 1..86400 seconds")
    return value


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Merge BATCH and SPEED into telemetry_minute.")
    parser.add_argument("--conf", default=DEFAULT_CONF_PATH)
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep merging every timing.merge_interval_seconds until SIGTERM / SIGINT",
    )
    parser.add_argument(
        "--every", type=seconds, metavar="SECONDS", help="keep merging every SECONDS"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.conf)
        spark = build_session(config, app_name="weir-merge")
        if args.follow or args.every is not None:
            interval = args.every or config.timing.merge_interval_seconds
            with stop_on_signals(threading.Event(), "the current merge") as stop:
                follow_merges(spark, config, interval, stop)
        else:
            run_merge(spark, config)
    except ConfigError as error:
        logging.error("configuration error %s", error)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        logging.error("failed %s", error)
        return EXIT_RUNTIME_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
