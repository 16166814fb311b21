"""spark-submit entry point of the raw archiver and speed layer; `weir stream` runs the same code.

    spark-submit jobs/streaming/stream.py --conf conf/emr.yaml --source kafka [--available-now]
        [--reset-checkpoint]

Exit codes (DESIGN.md §8): 0 success (also after SIGTERM / SIGINT: the queries stop after
their current micro-batch), 1 a failed query or a refused checkpoint, 2 bad arguments or
configuration (nothing written).
"""

import argparse
import logging
import sys
import threading

from weir.config import DEFAULT_CONF_PATH, ConfigError, load_config
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.layers.streaming import configure_logging, run_stream
from weir.signals import stop_on_signals
from weir.sources import SOURCE_NAMES, check_source
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Raw archiver and speed layer of one source.")
    parser.add_argument("--conf", default=DEFAULT_CONF_PATH)
    parser.add_argument("--source", choices=SOURCE_NAMES, default="kafka")
    parser.add_argument("--available-now", action="store_true")
    parser.add_argument("--reset-checkpoint", action="store_true")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        config = load_config(args.conf)
        check_source(config, args.source)
        spark = build_session(config, app_name=f"weir-stream-{args.source}")
        with stop_on_signals(threading.Event()) as stop:
            run_stream(spark, config, args.source, args.available_now, args.reset_checkpoint, stop)
    except ConfigError as error:
        logging.error("configuration error %s", error)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        logging.error("failed %s", error)
        return EXIT_RUNTIME_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
